"""Run one onnxruntime.transformers fusion class on a ModelProto in place (shared by the
passes in this folder that reuse onnxruntime's matchers)."""

from __future__ import annotations

import logging

import onnx


def run_ort_fusion(model: onnx.ModelProto, fusion_class, fused_op: str) -> int:
    """Apply `fusion_class` to `model` (in place, node list kept topological); returns how
    many `fused_op` nodes it added."""
    from onnxruntime.transformers.onnx_model import OnnxModel

    before = sum(n.op_type == fused_op for n in model.graph.node)
    wrapped = OnnxModel(model)
    # the fusion logs one line per fused node at INFO; the exporter reports the count
    logger = logging.getLogger("onnxruntime.transformers")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        fusion_class(wrapped).apply()
        wrapped.topological_sort()
    finally:
        logger.setLevel(level)
    return sum(n.op_type == fused_op for n in model.graph.node) - before
