"""--linears espace|svd (export/linears/) on a tiny local checkpoint: the factored layers are
what the file runs, quantized and checked against PyTorch; one projection per shared input."""

from __future__ import annotations

import json

import onnx
import pytest

from tensorgpt.cli import main as cli_main
from tensorgpt.common.contract import MANIFEST_FILE, MODEL_FILE


def _export(folder, out, *flags):
    return cli_main(["export", str(folder), str(out), *flags])


def test_espace_with_q4_is_factored_quantized_and_verified(tiny_llama, tmp_path):
    from tests.conftest import SHARED_DATA

    text = tmp_path / "calib.txt"
    valid = SHARED_DATA / "valid.txt"
    text.write_text(
        valid.read_text(encoding="utf-8")[:40_000] if valid.is_file() else "a b c. " * 4000
    )
    out = tmp_path / "out"
    flags = ["--linears", "espace", "--linear-ratio", "0.85", "--quantize", "q4"]
    assert _export(tiny_llama, out, *flags, "--calib-text", str(text)) == 0
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    lin = manifest["linears"]
    assert manifest["verification"]["passed"]
    assert lin["stored_params"] <= 0.85 * lin["original_params"]
    factored = [g for g in lin["groups"] if g["rank"] is not None]
    assert factored and all(g["rank"] % lin["step"] == 0 for g in factored)
    assert lin["calibration"]["calibration"] == "text"
    # every factor is a 4-bit weight: one A per group plus one B per layer, and the dense rest
    dense_layers = sum(len(g["layers"]) for g in lin["groups"] if g["rank"] is None)
    weights = sum(1 + len(g["layers"]) for g in factored) + dense_layers
    assert manifest["weight_quantization"]["weights"] == weights
    # the shared projection is computed once per group: one MatMul reads it
    shared = [g for g in factored if len(g["layers"]) > 1]
    assert lin["deduplicated"]["matmuls"] == sum(len(g["layers"]) - 1 for g in shared)
    graph = onnx.load(str(out / MODEL_FILE)).graph
    readers: dict[str, int] = {}
    for node in graph.node:
        if node.op_type == "MatMul":
            readers[node.input[1]] = readers.get(node.input[1], 0) + 1
    assert max(readers.values()) == 1


def test_svd_baseline_needs_no_calibration(tiny_llama, tmp_path):
    out = tmp_path / "out"
    assert _export(tiny_llama, out, "--linears", "svd", "--linear-ratio", "0.9") == 0
    lin = json.loads((out / MANIFEST_FILE).read_text())["linears"]
    assert lin["calibration"] is None
    assert all(len(g["layers"]) == 1 for g in lin["groups"])
    assert 0 < lin["stored_ratio"] <= 0.9


@pytest.mark.parametrize(
    ("flags", "word"),
    [
        (["--linear-ratio", "0.5"], "--linear-ratio needs --linears"),
        (["--linears", "espace"], "needs --linear-ratio"),
        (["--linears", "svd", "--linear-ratio", "1.5"], "(0, 1)"),
        (["--linears", "svd", "--linear-ratio", "0.05"], "smallest factorization"),
    ],
)
def test_bad_linear_options(tiny_llama, tmp_path, capsys, flags, word):
    code = _export(tiny_llama, tmp_path / "out", *flags)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("tensorgpt export: error:")]
    assert len(errors) == 1 and word in errors[0], err
    assert not (tmp_path / "out").exists()
