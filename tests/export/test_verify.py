"""The parity check's tolerance follows the logits' scale and still fails a wrong file."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tensorgpt.export.exporter import export_model
from tensorgpt.export.verify import FP32_RELATIVE, FP32_TOLERANCE, parity_tolerance, verify
from tensorgpt.models import adapter_for
from tests.conftest import build_checkpoint


def test_tolerance_is_the_floor_for_small_logits_and_relative_above():
    assert parity_tolerance(0.5) == FP32_TOLERANCE
    assert parity_tolerance(FP32_TOLERANCE / FP32_RELATIVE) == pytest.approx(FP32_TOLERANCE)
    assert parity_tolerance(25.0) == pytest.approx(25.0 * FP32_RELATIVE)


def test_a_wrong_file_fails_where_large_logits_raise_the_tolerance(tmp_path):
    """Large random weights give logits whose scale lifts the tolerance above the floor; the
    file still passes against its own weights and fails against weights 0.5% off in one
    vector (the final norm): a file that far off is refused."""
    ckpt = build_checkpoint(tmp_path / "ckpt", "llama", initializer_range=0.5)
    export_model(str(ckpt), tmp_path / "out", log=lambda _: None)
    model = AutoModelForCausalLM.from_pretrained(str(ckpt), dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(ckpt))
    adapter = adapter_for(model)
    path = str(tmp_path / "out" / "model.onnx")

    right = verify(path, model, adapter, tokenizer, quantized=False)
    assert right["tolerance"] > FP32_TOLERANCE, right  # the scale, not the floor, decides
    assert right["passed"] and right["max_abs_logit_diff"] <= right["tolerance"]

    with torch.no_grad():
        model.model.norm.weight.mul_(1.005)
    wrong = verify(path, model, adapter, tokenizer, quantized=False)
    assert not wrong["passed"], wrong
    assert wrong["max_abs_logit_diff"] > 10 * wrong["tolerance"], wrong
