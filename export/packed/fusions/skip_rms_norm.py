"""Fuse a residual Add feeding a SimplifiedLayerNormalization into one com.microsoft
SkipSimplifiedLayerNormalization (its output 3 is the sum, which the next residual reads).

Runs after export/packed/fusions/rms_norm.py (it needs the fused norms). The matching is
onnxruntime.transformers' FusionSkipSimplifiedLayerNormalization.
"""

from __future__ import annotations

import onnx

from tensorgpt.export.packed.fusions.ort_matchers import run_ort_fusion

FUSED = "SkipSimplifiedLayerNormalization"


def fuse_skip_rms_norm(model: onnx.ModelProto) -> int:
    """Rewrite `model` in place; returns the number of fused residual + norm pairs."""
    from onnxruntime.transformers.fusion_simplified_layernorm import (
        FusionSkipSimplifiedLayerNormalization,
    )

    return run_ort_fusion(model, FusionSkipSimplifiedLayerNormalization, FUSED)
