"""--quantize mixed (export/quantizers/mixed.py, export/mixed_weights.py) on the tiny Llama:
formats chosen under --weight-bits, GPTQ weights that the file decodes and PyTorch runs."""

from __future__ import annotations

import json

import onnx
import pytest

from tensorgpt.cli import main as cli_main
from tensorgpt.common.contract import MANIFEST_FILE, MODEL_FILE


def _stored_bits(folder, params: int) -> float:
    inits = onnx.load(str(folder / MODEL_FILE)).graph.initializer
    stored = 0
    for t in inits:
        if t.name.startswith("q4.") and not t.name.startswith("q4.q"):  # the weights' parts
            size = 1
            for d in t.dims:
                size *= d
            stored += size * (2 if t.data_type == onnx.TensorProto.FLOAT16 else 1)
    return 8 * stored / params


def test_mixed_meets_the_budget_and_verifies(tiny_llama, tmp_path):
    from tests.conftest import SHARED_DATA

    text = tmp_path / "calib.txt"
    valid = SHARED_DATA / "valid.txt"
    text.write_text(
        valid.read_text(encoding="utf-8")[:40_000] if valid.is_file() else "a b c. " * 4000
    )
    out = tmp_path / "mixed"
    flags = ["--quantize", "mixed", "--weight-bits", "4.2", "--calib-text", str(text)]
    assert cli_main(["export", str(tiny_llama), str(out), *flags]) == 0
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert manifest["verification"]["passed"] and manifest["verification"]["greedy_match"]
    report = manifest["weight_quantization"]
    mixed = report["mixed"]
    assert report["format"] == "mixed" and mixed["calibration"] == "text"
    assert mixed["bits_per_weight"] <= 4.2
    # several formats in one file, and the file's bytes are what the plan counted
    assert sum(v > 0 for v in mixed["formats"].values()) >= 2
    assert _stored_bits(out, report["params"]) == pytest.approx(mixed["bits_per_weight"], 1e-3)
    formats = {t["format"] for t in report["tensors"].values()}
    assert formats == {k for k, v in mixed["formats"].items() if v}, report["tensors"]


def test_weight_bits_needs_mixed_and_a_reachable_budget(tiny_llama, tmp_path, capsys):
    code = cli_main(["export", str(tiny_llama), str(tmp_path / "a"), "--weight-bits", "4"])
    assert code == 2 and "--weight-bits needs --quantize mixed" in capsys.readouterr().err
    flags = ["--quantize", "mixed", "--weight-bits", "3"]
    assert cli_main(["export", str(tiny_llama), str(tmp_path / "b"), *flags]) == 2
    assert "--weight-bits must be in" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
