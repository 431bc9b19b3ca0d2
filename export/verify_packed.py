"""Parity check of a `--runtime packed` file, in two steps.

1. exact grid: the file with every MatMulNBits at accuracy_level 1 (fp32 activations) must
   match PyTorch running the same Q4_1 weights and 8-bit table within the fp32 tolerance and
   pick the same greedy tokens. This proves the re-packing (codes, scales, minima
   correction, the shared table) is exact: the packed graph computes what the portable one does.
2. shipped file: at `ACCURACY_LEVEL` (4: int8 activations inside MatMulNBits) the logits move
   by design; like the int8 baselines, the report states the max logit difference and the
   cross-entropy change on the same tokens, and fails only on non-finite output.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from tensorgpt.export import packed_weights
from tensorgpt.export.verify import verify

_EXACT_KEYS = ("max_abs_logit_diff", "greedy_match", "tolerance", "passed")


def set_accuracy_level(path: Path, level: int) -> None:
    """Rewrite every MatMulNBits' accuracy_level in the file (weights are not touched)."""
    model = onnx.load(str(path), load_external_data=False)
    for node in model.graph.node:
        if node.op_type == "MatMulNBits":
            for attr in node.attribute:
                if attr.name == "accuracy_level":
                    attr.i = level
    onnx.save_model(model, str(path))


def verify_packed(model_path: Path, model, adapter, tokenizer) -> dict:
    level = packed_weights.ACCURACY_LEVEL
    set_accuracy_level(model_path, 1)
    exact = verify(str(model_path), model, adapter, tokenizer, quantized=False)
    exact_part = {k: exact[k] for k in _EXACT_KEYS}
    if level == 1 or not exact["passed"]:
        return {**exact, "accuracy_level": 1, "exact_grid": exact_part}
    set_accuracy_level(model_path, level)
    shipped = verify(str(model_path), model, adapter, tokenizer, quantized=True)
    return {**shipped, "accuracy_level": level, "exact_grid": exact_part}
