"""End-to-end export of tiny random GPT-2 and Llama checkpoints with every method."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from transformers import AutoModelForCausalLM

from tensorgpt.cli import main as cli_main
from tensorgpt.export.compress import CompressionSpec
from tensorgpt.export.exporter import export_model
from tensorgpt.models.cache_api import cache_argument, returned_cache

METHODS = {
    "none": CompressionSpec(),
    "tt": CompressionSpec(method="tt", rank=4),
    "tt-factors": CompressionSpec(method="tt", rank=8, factors=(4, 4, 4)),
    "tt-rel-error": CompressionSpec(method="tt", rel_error=0.3),
    "tt-matrix": CompressionSpec(method="tt-matrix", rank=16),
    "svd": CompressionSpec(method="svd", rank=8),
    "int8-rows": CompressionSpec(method="int8-rows"),
    "int4-rows": CompressionSpec(method="int4-rows"),
}


GPT2_SKIP = ("tt-factors", "tt-rel-error", "svd", "int8-rows")


@pytest.fixture(scope="module")
def exports(tiny_gpt2, tiny_llama, tmp_path_factory):
    """Every (family, method) exported once for the module; export itself verifies parity."""
    root = tmp_path_factory.mktemp("exports")
    built = {}
    for family, ckpt in (("gpt2", tiny_gpt2), ("llama", tiny_llama)):
        for name, spec in METHODS.items():
            if family == "gpt2" and name in GPT2_SKIP:
                continue  # same graph code as on llama; keeps the suite short
            out = root / f"{family}-{name}"
            built[family, name] = (out, export_model(str(ckpt), out, spec, log=lambda _: None))
    out = root / "llama-tt-int8"
    spec = CompressionSpec(method="tt", rank=4, int8_cores=True)
    built["llama", "tt-int8"] = (
        out,
        export_model(str(tiny_llama), out, spec, quantize="int8", log=lambda _: None),
    )
    # a dense tied table shared by the Gather and the head, with the int8 quantizers
    for quantize in ("int8", "ort-int8"):
        out = root / f"gpt2-none-{quantize}"
        manifest = export_model(str(tiny_gpt2), out, quantize=quantize, log=lambda _: None)
        built["gpt2", f"none-{quantize}"] = (out, manifest)
    return built


def test_every_method_verifies(exports):
    for (family, name), (out, manifest) in exports.items():
        v = manifest["verification"]
        assert v["passed"], (family, name, v)
        assert v["greedy_match"] or name.endswith("int8"), (family, name)
        if not name.endswith("int8"):
            assert v["max_abs_logit_diff"] <= 1e-3, (family, name)
        assert sorted(os.listdir(out))[:2] == ["manifest.json", "model.onnx"]
        assert (out / "tokenizer.json").is_file()
        on_disk = json.loads((out / "manifest.json").read_text())
        assert on_disk["method"] == manifest["method"]
        assert on_disk["bytes"]["file"] == os.path.getsize(out / "model.onnx")


def _float_initializer_shapes(path: Path) -> list[list[int]]:
    model = onnx.load(str(path), load_external_data=False)
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE}
    return [list(t.dims) for t in model.graph.initializer if t.data_type in floats]


def test_compressed_files_hold_no_dense_table(exports):
    for (family, name), (out, manifest) in exports.items():
        v, d = manifest["config"]["vocab_size"], manifest["config"]["hidden_size"]
        dense = [
            s for s in _float_initializer_shapes(out / "model.onnx") if sorted(s) == sorted([v, d])
        ]
        if name == "none":
            assert dense == [[v, d]], "uncompressed tied export stores the table exactly once"
        elif name.startswith("none-"):
            continue  # int8 baselines of the dense table: quantized copies, by design
        else:
            assert dense == [], (family, name, dense)


def test_embedding_chain_uses_standard_ops_only(exports):
    allowed = {
        "Gather",
        "Reshape",
        "Transpose",
        "MatMul",
        "Slice",
        "Div",
        "Mod",
        "Cast",
        "Mul",
        "Identity",
    }
    unpack_4bit = {"BitwiseAnd", "BitShift", "Unsqueeze", "Concat", "Sub"}
    for (_, name), (out, _) in exports.items():
        if name == "none-ort-int8":
            continue  # the stock quantizer's own rewrite of the table (DequantizeLinear), by design
        permitted = allowed | (unpack_4bit if name.endswith("-rows") else set())
        model = onnx.load(str(out / "model.onnx"), load_external_data=False)
        chain = [n for n in model.graph.node if n.name.startswith("embedding/")]
        assert {n.op_type for n in chain} <= permitted, (
            name,
            {n.op_type for n in chain} - permitted,
        )
        assert all(n.domain in ("", "ai.onnx") for n in chain), name
        assert not any(n.op_type == "Einsum" for n in model.graph.node)


def test_graph_interface(exports):
    out, manifest = exports["llama", "tt"]
    session = ort.InferenceSession(str(out / "model.onnx"))
    names = [i.name for i in session.get_inputs()]
    layers = manifest["config"]["num_layers"]
    assert names[:3] == ["input_ids", "attention_mask", "position_ids"]
    assert names[3:] == [
        f"past_key_values.{i}.{kv}" for i in range(layers) for kv in ("key", "value")
    ]
    outputs = [o.name for o in session.get_outputs()]
    assert outputs == ["logits"] + [
        f"present.{i}.{kv}" for i in range(layers) for kv in ("key", "value")
    ]
    assert session.get_inputs()[0].shape == ["batch", "seq"]
    props = {p.key: p.value for p in onnx.load(str(out / "model.onnx")).metadata_props}
    assert props["tensorgpt.method"] == "tt"
    assert json.loads(props["tensorgpt.verification"])["passed"] is True


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_batch2_left_padding_and_cache(exports, tiny_gpt2, tiny_llama, family):
    """Batch of 2 with left padding, then 3 cached decode steps, against PyTorch on the same table."""
    out, manifest = exports[family, "tt"]
    ckpt = tiny_gpt2 if family == "gpt2" else tiny_llama
    cfg = manifest["config"]
    session = ort.InferenceSession(str(out / "model.onnx"))
    vocab = cfg["vocab_size"]
    # The table the file holds, read back through its own embedding path: logits of a
    # one-token step are not needed; instead rebuild via the tt_ops cores the export used.
    model = AutoModelForCausalLM.from_pretrained(str(ckpt), dtype=torch.float32).eval()
    from tensorgpt.export.compress import compress_embedding

    table = model.get_input_embeddings().weight.detach().numpy()
    graph, _ = compress_embedding(table, METHODS["tt"])
    model.get_input_embeddings().weight.data = torch.from_numpy(graph.decoded().copy())

    rng = np.random.default_rng(0)
    ids = rng.integers(1, vocab, size=(2, 7))
    mask = np.ones((2, 7), dtype=np.int64)
    mask[0, :3] = 0  # first prompt is 4 tokens, left-padded
    layers, heads, hd = cfg["num_layers"], cfg["num_kv_heads"], cfg["head_dim"]
    names = [f"past_key_values.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
    past = {n: np.zeros((2, heads, 0, hd), np.float32) for n in names}
    torch_past = None
    for step in range(4):
        positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)[:, -ids.shape[1] :]
        feeds = {"input_ids": ids, "attention_mask": mask, "position_ids": positions, **past}
        outputs = session.run(None, feeds)
        with torch.no_grad():
            ref = model(
                input_ids=torch.from_numpy(ids),
                attention_mask=torch.from_numpy(mask),
                position_ids=torch.from_numpy(positions),
                use_cache=True,
                **{cache_argument(model): torch_past},
            )
        real = mask[:, -ids.shape[1] :].astype(bool)  # padded query rows are undefined
        diff = np.abs(outputs[0] - ref.logits.numpy())[real].max()
        assert diff <= 1e-3, (step, diff)
        torch_past = returned_cache(ref)
        past = dict(zip(names, outputs[1:]))
        ids = outputs[0][:, -1].argmax(-1)[:, None].astype(np.int64)
        assert (ids[:, 0] == ref.logits[:, -1].argmax(-1).numpy()).all()
        mask = np.concatenate([mask, np.ones((2, 1), np.int64)], axis=1)


def test_same_command_gives_identical_bytes(tiny_llama, tmp_path):
    spec = CompressionSpec(method="tt-matrix", rank=8)
    a = export_model(str(tiny_llama), tmp_path / "a", spec, log=lambda _: None)
    # a folder whose parent does not exist yet is created, as `mkdir -p` would
    b = export_model(str(tiny_llama), tmp_path / "new" / "b", spec, log=lambda _: None)
    assert (tmp_path / "a" / "model.onnx").read_bytes() == (
        tmp_path / "new" / "b" / "model.onnx"
    ).read_bytes()
    assert a["bytes"] == b["bytes"]


def test_failure_leaves_out_dir_untouched(tiny_gpt2, tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text('{"format": "tensorgpt-export"}')  # an earlier export
    (out / "keep.txt").write_text("old export")

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("tensorgpt.export.exporter.onnx.save_model", disk_full)
    code = cli_main(["export", str(tiny_gpt2), str(out), "--force"])
    assert code == 2
    assert sorted(os.listdir(out)) == ["keep.txt", "manifest.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"], "no staging folder left behind"


def test_failed_verification_is_an_error(tiny_gpt2, tmp_path, monkeypatch):
    import tensorgpt.export.verify as verify

    monkeypatch.setattr(verify, "FP32_TOLERANCE", -1.0)  # no real file can pass these
    monkeypatch.setattr(verify, "FP32_RELATIVE", -1.0)
    code = cli_main(["export", str(tiny_gpt2), str(tmp_path / "out")])
    assert code == 2
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.iterdir()) == []


def test_existing_out_dir_needs_force(tiny_gpt2, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "x").write_text("x")
    assert cli_main(["export", str(tiny_gpt2), str(out)]) == 2
    assert "--force" in capsys.readouterr().err


def test_q4_weights_fold_and_match_pytorch(tiny_llama, tmp_path):
    """4-bit block weights: the file stores codes, not fp32 weights, and still verifies strictly."""
    manifest = export_model(str(tiny_llama), tmp_path / "q4", quantize="q4", log=lambda _: None)
    v = manifest["verification"]
    assert v["passed"] and v["max_abs_logit_diff"] <= 1e-3 and v["greedy_match"]
    report = manifest["weight_quantization"]
    assert report["weights"] == 2 * 7  # q, k, v, o, gate, up, down per layer
    model = onnx.load(str(tmp_path / "q4" / "model.onnx"))
    float_2d = [
        t.name
        for t in model.graph.initializer
        if t.data_type == onnx.TensorProto.FLOAT
        and len(t.dims) == 2
        and not t.name.startswith("embedding")
    ]
    assert float_2d == [], float_2d
    assert any(
        t.name.endswith(".q4") and t.data_type == onnx.TensorProto.UINT8
        for t in model.graph.initializer
    )


def test_q4_grid_is_recovered_exactly():
    """Weights already on a Q4_1 grid (a GGUF source) come back bit for bit."""
    from tensorgpt.tt_ops.row_codecs import decode_q4_blocks, encode_q4_blocks

    rng = np.random.default_rng(0)
    d = rng.uniform(0.001, 0.05, size=(4, 1, 24)).astype(np.float16).astype(np.float32)
    m = (-rng.uniform(0, 0.5, size=(4, 1, 24))).astype(np.float16).astype(np.float32)
    q = rng.integers(0, 16, size=(4, 32, 24)).astype(np.float32)
    q[:, 0, :], q[:, 1, :] = 0, 15  # as Q4_1 quantization makes them: min and max on the grid
    on_grid = (q * d + m).reshape(128, 24)
    back = decode_q4_blocks(*encode_q4_blocks(on_grid))
    assert np.array_equal(back, on_grid)
    off_grid = rng.normal(size=(128, 24)).astype(np.float32)
    err = np.abs(decode_q4_blocks(*encode_q4_blocks(off_grid)) - off_grid).max()
    assert 0 < err < 0.5


def test_transform_coded_table_verifies(tiny_llama, tmp_path):
    """tc: calibration on a text, a coded table decoded in the graph, strict parity."""
    from tests.conftest import SHARED_DATA

    calib = SHARED_DATA / "valid.txt"
    if not calib.is_file():
        calib = tmp_path / "calib.txt"
        calib.write_text("The quick brown fox jumps over the lazy dog. " * 400)
    spec = CompressionSpec(method="tc", bits_per_weight=3.0, calib_text=str(calib))
    manifest = export_model(str(tiny_llama), tmp_path / "tc", spec, log=lambda _: None)
    v = manifest["verification"]
    assert v["passed"] and v["greedy_match"] and v["max_abs_logit_diff"] <= 1e-3
    assert manifest["bytes"]["embedding"] < manifest["bytes"]["embedding_dense_fp32"] / 4
    assert manifest["embedding_info"]["classes"] >= 2
    assert manifest["embedding_info"]["logit_bias"] is False  # --calib-text alone: unchanged
    dense = [
        s
        for s in _float_initializer_shapes(tmp_path / "tc" / "model.onnx")
        if sorted(s) == [64, 384]
    ]
    assert dense == []
