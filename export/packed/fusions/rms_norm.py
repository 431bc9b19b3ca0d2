"""Fuse RMSNorm (Pow, ReduceMean, Add eps, Sqrt, Reciprocal, Mul, Mul weight) into
com.microsoft SimplifiedLayerNormalization.

onnxruntime's own session optimizer leaves this decomposition as seven kernels per norm (two
per layer plus the final one); one fused kernel per norm is what onnxruntime-genai's builder
emits. The matching is onnxruntime.transformers' FusionSimplifiedLayerNormalization (a
well-kept pattern for exactly this decomposition, checking the epsilon and the weight), so
this file only runs it and keeps the node list topological.
"""

from __future__ import annotations

import onnx

from tensorgpt.export.packed.fusions.ort_matchers import run_ort_fusion

FUSED = "SimplifiedLayerNormalization"


def fuse_rms_norm(model: onnx.ModelProto) -> int:
    """Rewrite `model` in place; returns the number of fused norms."""
    from onnxruntime.transformers.fusion_simplified_layernorm import (
        FusionSimplifiedLayerNormalization,
    )

    return run_ort_fusion(model, FusionSimplifiedLayerNormalization, FUSED)
