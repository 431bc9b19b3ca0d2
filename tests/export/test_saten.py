"""--linears saten (export/linears/saten.py) on a tiny local checkpoint: the TT-matrix chain
and the sparse residual are what the file runs, quantized and checked against PyTorch."""

from __future__ import annotations

import json

import numpy as np
import onnx
import torch

from tensorgpt.cli import main as cli_main
from tensorgpt.common.contract import MANIFEST_FILE, MODEL_FILE
from tensorgpt.export.linears.saten_layer import SatenLinear
from tensorgpt.tt_ops.tt_linear import saten_layer


def test_module_computes_the_compressed_weight():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((96, 64))
    layer = saten_layer(w, rng.uniform(0.5, 2.0, 64), rank=5, per_row=3)
    bias = torch.from_numpy(rng.standard_normal(96).astype(np.float32))
    module = SatenLinear(layer, bias)
    x = torch.from_numpy(rng.standard_normal((2, 3, 64)).astype(np.float32))
    with torch.no_grad():
        y = module(x).numpy()
    expect = x.numpy() @ layer.dense().T + bias.numpy()
    np.testing.assert_allclose(y, expect, atol=1e-4)
    np.testing.assert_allclose(module.dense_weight().detach().numpy(), layer.dense(), atol=1e-5)


def _calib(tmp_path):
    from tests.conftest import SHARED_DATA

    text = tmp_path / "calib.txt"
    valid = SHARED_DATA / "valid.txt"
    text.write_text(
        valid.read_text(encoding="utf-8")[:40_000] if valid.is_file() else "a b c. " * 4000
    )
    return text


def test_saten_with_q4_is_compressed_quantized_and_verified(tiny_llama, tmp_path):
    out = tmp_path / "out"
    flags = ["--linears", "saten", "--linear-ratio", "0.7", "--quantize", "q4"]
    code = cli_main(
        ["export", str(tiny_llama), str(out), *flags, "--calib-text", str(_calib(tmp_path))]
    )
    assert code == 0
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    lin = manifest["linears"]
    assert manifest["verification"]["passed"]
    assert lin["stored_params"] <= 0.7 * lin["original_params"]
    cores = [g for g in lin["groups"] if g["rank"] is not None]
    assert cores and lin["entries"] == sum(g["per_row"] * g["out"] for g in cores) > 0
    assert lin["share_errors"][f"{lin['sparse_share']:g}"] == min(
        e for e in lin["share_errors"].values() if e is not None
    )
    graph = onnx.load(str(out / MODEL_FILE)).graph
    ops = {n.op_type for n in graph.node}
    assert {"Gather", "ReduceSum"} <= ops
    # both cores of every factored layer are 4-bit weights, besides the dense layers
    dense = sum(g["rank"] is None for g in lin["groups"])
    assert manifest["weight_quantization"]["weights"] == 2 * len(cores) + dense
    # no dense weight of a factored layer is in the file
    shapes = {tuple(t.dims) for t in graph.initializer}
    assert not any((g["in"], g["out"]) in shapes or (g["out"], g["in"]) in shapes for g in cores)
