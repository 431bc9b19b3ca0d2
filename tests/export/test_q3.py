"""--quantize q3 (export/quantizers/q3.py, tt_ops/q3_blocks.py): 3-bit blocks that fold at load,
verify strictly against PyTorch running the same weights, and cost 4 bits per weight."""

from __future__ import annotations

import numpy as np
import onnx

from tensorgpt.export.exporter import export_model
from tensorgpt.tt_ops.q3_blocks import decode_q3_blocks, encode_q3_blocks


def test_q3_grid_round_trip_and_error():
    """Blocks that use all 8 levels of a fp16 grid come back bit for bit; random weights
    land between q4's error and the error of the plain min/max grid."""
    rng = np.random.default_rng(0)
    d = rng.uniform(0.001, 0.05, size=(4, 1, 24)).astype(np.float16).astype(np.float32)
    m = (-rng.uniform(0, 0.5, size=(4, 1, 24))).astype(np.float16).astype(np.float32)
    q = rng.integers(0, 8, size=(4, 32, 24)).astype(np.float32)
    q[:, :8, :] = np.arange(8, dtype=np.float32)[None, :, None]
    on_grid = (q * d + m).reshape(128, 24)
    low, high, scale, minimum = encode_q3_blocks(on_grid)
    assert low.shape == (4, 8, 24) and high.shape == (4, 4, 24) and scale.dtype == np.float16
    assert np.array_equal(decode_q3_blocks(low, high, scale, minimum), on_grid)

    w = rng.normal(size=(256, 40)).astype(np.float32)
    err = np.sqrt(np.mean((decode_q3_blocks(*encode_q3_blocks(w)) - w) ** 2))
    blocks = w.reshape(8, 32, 40)
    lo, hi = blocks.min(1, keepdims=True), blocks.max(1, keepdims=True)
    plain = np.rint((blocks - lo) / ((hi - lo) / 7)) * ((hi - lo) / 7) + lo
    assert 0 < err < np.sqrt(np.mean((plain - blocks) ** 2))


def test_q3_weights_fold_and_match_pytorch(tiny_llama, tmp_path):
    manifest = export_model(str(tiny_llama), tmp_path / "q3", quantize="q3", log=lambda _: None)
    v = manifest["verification"]
    assert v["passed"] and v["max_abs_logit_diff"] <= 1e-3 and v["greedy_match"]
    report = manifest["weight_quantization"]
    assert report["weights"] == 2 * 7 and report["format"] == "q3"
    inits = onnx.load(str(tmp_path / "q3" / "model.onnx")).graph.initializer
    assert not [
        t.name
        for t in inits
        if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == 2
        if not t.name.startswith("embedding")
    ]
    # 3 bits of codes + 2 fp16 per 32 weights = 4 bits per weight
    stored = sum(
        int(np.prod(t.dims)) * (2 if t.data_type == onnx.TensorProto.FLOAT16 else 1)
        for t in inits
        if t.name.rsplit(".", 1)[-1] in ("q3lo", "q3hi", "scale", "min")
    )
    assert stored * 8 == 4 * report["params"]
