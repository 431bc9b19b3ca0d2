"""`--runtime packed`: MatMulNBits q4 weights and the 8-bit shared table, on the tiny models."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

pytest.importorskip("torch")

from tensorgpt.export.exporter import export_model  # noqa: E402
from tensorgpt.export.packed.table import decode_q8_blocks, encode_q8_blocks  # noqa: E402
from tensorgpt.export.packed.verify import set_accuracy_level  # noqa: E402
from tensorgpt.export.packed.weights import gguf_to_nbits, nbits_to_codes  # noqa: E402
from tensorgpt.runtime_demo.session import ExportedModel  # noqa: E402
from tensorgpt.tt_ops.row_codecs import decode_q4_blocks, encode_q4_blocks  # noqa: E402

FLOATS = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE}


@pytest.fixture(scope="module")
def pair(tiny_llama, tmp_path_factory):
    """(portable folder, packed folder) of the tiny Llama, both --quantize q4."""
    root = tmp_path_factory.mktemp("packed-llama")
    for runtime in ("portable", "packed"):
        export_model(
            str(tiny_llama), root / runtime, quantize="q4", runtime=runtime, log=lambda _m: None
        )
    return root / "portable", root / "packed"


@pytest.fixture(scope="module")
def packed_gpt2(tiny_gpt2, tmp_path_factory):
    """The tiny GPT-2 (Gemm with bias, LayerNorm, tied head) exported packed."""
    folder = tmp_path_factory.mktemp("packed-gpt2") / "export"
    export_model(str(tiny_gpt2), folder, quantize="q4", runtime="packed", log=lambda _m: None)
    return folder


def _inits(path) -> dict[str, np.ndarray]:
    model = onnx.load(str(path))
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _logits(folder, ids: np.ndarray, check_integrity: bool = True) -> np.ndarray:
    model = ExportedModel(folder, threads=1, check_integrity=check_integrity)
    mask = np.ones_like(ids)
    positions = np.arange(ids.shape[1], dtype=np.int64)[None, :]
    return model.forward(ids, mask, positions, model.empty_past(1))[0]


@pytest.mark.parametrize("which", ["llama", "gpt2"])
def test_manifest_and_two_step_verification(which, request):
    import json

    packed = (
        request.getfixturevalue("pair")[1]
        if which == "llama"
        else request.getfixturevalue("packed_gpt2")
    )
    manifest = json.loads((packed / "manifest.json").read_text())
    assert manifest["runtime"] == "packed"
    report = manifest["verification"]
    assert report["passed"] and report["exact_grid"]["passed"]
    assert report["exact_grid"]["max_abs_logit_diff"] <= 1e-3


def test_packed_equals_portable_at_fp32_activations(pair, tmp_path):
    """At accuracy_level 1 the packed graph computes the portable graph's function: the
    minima correction and the shared 8-bit table are exact re-packings."""
    import shutil

    portable, packed = pair
    fp32 = tmp_path / "packed-fp32"
    shutil.copytree(packed, fp32)
    set_accuracy_level(fp32 / "model.onnx", 1)
    ids = np.arange(1, 25, dtype=np.int64)[None, :] * 7 % 300
    # portable runs the fp32 table; packed its 8-bit version: compare against a portable
    # run whose table is the same 8-bit grid, via the graph's own rows (parity tolerance)
    # model.onnx was edited on purpose (accuracy level), so its recorded hash no longer holds
    got, want = _logits(fp32, ids, check_integrity=False), _logits(portable, ids)
    scale = float(np.abs(want).max())
    assert np.abs(got - want).max() <= 0.05 * scale  # only the table's 8-bit rounding differs
    shipped = _logits(packed, ids)
    assert np.isfinite(shipped).all()
    assert (shipped.argmax(-1) == got.argmax(-1)).mean() >= 0.8


def test_q4_codes_reconstruct_the_portable_grid_exactly(pair):
    """Every weight column of the packed file (fused q/k/v and gate/up included) decodes,
    d * q + m, to exactly a column of the portable file's Q4_1 weights, and vice versa."""
    from collections import Counter

    portable, packed = pair
    a, b = _inits(portable / "model.onnx"), _inits(packed / "model.onnx")
    want: Counter = Counter()
    for name in a:
        if name.startswith("q4.w") and name.endswith(".q4"):
            tag = name[: -len(".q4")]
            w = decode_q4_blocks(a[name], a[f"{tag}.scale"][:, 0], a[f"{tag}.min"][:, 0])
            want.update(col.tobytes() for col in w.T)
    got: Counter = Counter()
    for name in b:
        if name.endswith(".q4") and name.startswith(("q4nbits.w", "fused")):
            tag = name[: -len(".q4")]
            codes = nbits_to_codes(b[name]).astype(np.float32)  # (K, N)
            d = np.repeat(b[f"{tag}.scale"].T.astype(np.float32), 32, axis=0)
            m = np.repeat(b[f"{tag}.min"].astype(np.float32), 32, axis=0)
            got.update(col.tobytes() for col in (codes * d + m).T)
    assert sum(want.values()) > 0
    assert got == want


def test_every_4bit_product_gets_its_zero_points(pair):
    """Every 4-bit MatMulNBits of the packed file names its zero points (the centered 8s,
    expanded at load from one stored byte): without the input onnxruntime's aarch64 build
    runs the node with per-row int8 activations (export/packed/zero_points.py)."""
    _, packed = pair
    model = onnx.load(str(packed / "model.onnx"))
    four = [
        n
        for n in model.graph.node
        if n.op_type == "MatMulNBits" and next(a.i for a in n.attribute if a.name == "bits") == 4
    ]
    assert four and all(len(n.input) > 3 and n.input[3].startswith("zp8/") for n in four)
    sizes = {t.name: len(t.raw_data) for t in model.graph.initializer}
    assert sizes["zp8.byte"] == 1 and not any(n.input[3] in sizes for n in four)


def test_no_dense_table_in_file_or_session(pair, tmp_path):
    """Neither the file nor the optimized session graph holds a float tensor of V x D
    entries (the fp32 head or a folded table)."""
    import onnxruntime as ort

    _, packed = pair
    model = onnx.load(str(packed / "model.onnx"))
    embed = next(t for t in model.graph.initializer if t.name == "embedding.q8.codes")
    vocab, blocks, width = embed.dims
    big = vocab * blocks * width
    for tensor in model.graph.initializer:
        assert not (tensor.data_type in FLOATS and np.prod(tensor.dims) >= big), tensor.name
    assert sum(n.op_type == "MatMulNBits" for n in model.graph.node) > 0
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(packed / "model.onnx"), options, providers=["CPUExecutionProvider"])
    optimized = onnx.load(str(tmp_path / "optimized.onnx"))
    for tensor in optimized.graph.initializer:
        assert not (tensor.data_type in FLOATS and np.prod(tensor.dims) >= big), tensor.name


def test_runtime_generates(packed_gpt2):
    from tensorgpt.runtime_demo.generate import generate

    model = ExportedModel(packed_gpt2, threads=1)
    tokens = list(generate(model, [1, 2, 3, 4], 12, eos_token_ids=[]))
    assert len(tokens) == 12 and all(0 <= t < model.vocab_size for t in tokens)


def test_layout_round_trips():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((96, 40)).astype(np.float32)
    packed, _, _ = encode_q4_blocks(w)
    codes = np.concatenate([packed & 15, packed >> 4], axis=1).reshape(96, 40)
    np.testing.assert_array_equal(nbits_to_codes(gguf_to_nbits(packed)), codes)
    table = rng.standard_normal((7, 64)).astype(np.float32)
    back = decode_q8_blocks(*encode_q8_blocks(table))
    assert np.abs(back - table).max() <= np.abs(table).max() / 127


def test_packed_needs_q4_or_none(tiny_gpt2, tmp_path):
    with pytest.raises(ValueError, match="--runtime packed"):
        export_model(str(tiny_gpt2), tmp_path / "x", quantize="int8", runtime="packed")
    assert not (tmp_path / "x").exists()


def test_llama_attention_and_norms_run_fused(pair):
    """The packed Llama runs onnxruntime's fused kernels (export/packed/fusions/__init__.py), recorded in the
    manifest, with no decomposed attention or norm left in the file."""
    import json

    _, packed = pair
    layers = 2
    fusions = json.loads((packed / "manifest.json").read_text())["fusions"]
    assert fusions == {
        "GroupQueryAttention": layers,
        "RotaryEmbedding": 2 * layers,
        "SimplifiedLayerNormalization": 1,  # the first norm reads no residual sum
        "SkipSimplifiedLayerNormalization": 2 * layers,
    }
    ops = {n.op_type for n in onnx.load(str(packed / "model.onnx")).graph.node}
    assert not ops & {"Softmax", "Pow", "Sqrt", "Neg"}


def test_fused_attention_left_padded_batch(pair):
    """A left-padded batch gives each row the logits it gets alone, at the prompt and at a
    cached decode step: padding reaches GroupQueryAttention as a mask bias and positions
    through position_ids."""
    from tensorgpt.runtime_demo.generate import left_pad, position_ids_from_mask

    _, packed = pair
    model = ExportedModel(packed, threads=1)
    prompts = [[5, 17, 42, 9, 3], [7, 1, 88, 23, 61, 2, 19, 30, 11]]
    ids, mask = left_pad(prompts, 0)
    logits, past = model.forward(
        ids, mask, position_ids_from_mask(mask, ids.shape[1]), model.empty_past(2)
    )
    step = np.asarray([[4], [4]], np.int64)
    mask2 = np.concatenate([mask, np.ones((2, 1), np.int64)], axis=1)
    logits2, _ = model.forward(step, mask2, position_ids_from_mask(mask2, 1), past)
    for row, prompt in enumerate(prompts):
        alone = np.asarray([prompt], np.int64)
        ones = np.ones_like(alone)
        want, want_past = model.forward(
            alone, ones, position_ids_from_mask(ones, alone.shape[1]), model.empty_past(1)
        )
        ones2 = np.ones((1, alone.shape[1] + 1), np.int64)
        want2, _ = model.forward(step[:1], ones2, position_ids_from_mask(ones2, 1), want_past)
        scale = float(np.abs(want).max())
        assert np.abs(logits[row, -1] - want[0, -1]).max() <= 1e-3 * scale
        assert np.abs(logits2[row, -1] - want2[0, -1]).max() <= 1e-3 * scale


def test_exact_grid_copy_and_a_wrong_file_fails_the_arm_rule(pair, tmp_path):
    """scripts/arm_check.sh's reference: the packed file's all-level-1 copy loads with its
    re-recorded hashes and computes the exact grid; a portable file needs none. Under the
    tolerance rule the shipped file passes against it and a wrong file (one 4-bit code per
    column and block of one projection off by one) fails, so the rule cannot pass everything."""
    import importlib.util
    import json
    import shutil
    from pathlib import Path

    from tensorgpt.common.integrity import record_files
    from tensorgpt.export.packed.verify import accuracy_levels, write_exact_grid_copy

    portable, packed = pair
    assert not write_exact_grid_copy(portable, tmp_path / "none")
    assert not (tmp_path / "none").exists()
    grid = tmp_path / "grid"
    assert write_exact_grid_copy(packed, grid)
    assert set(accuracy_levels(grid / "model.onnx").values()) == {1}
    assert set(accuracy_levels(packed / "model.onnx").values()) == {4}  # source untouched

    wrong = tmp_path / "wrong"
    shutil.copytree(packed, wrong)
    model = onnx.load(str(wrong / "model.onnx"))
    node = next(n for n in model.graph.node if n.op_type == "MatMulNBits")
    codes = next(t for t in model.graph.initializer if t.name == node.input[1])
    flipped = numpy_helper.to_array(codes).copy()
    flipped[..., 0] ^= 1  # (N, K/32, 16) uint8: the first code of every block, +-1
    codes.CopyFrom(numpy_helper.from_array(flipped, codes.name))
    onnx.save_model(model, str(wrong / "model.onnx"))
    manifest = json.loads((wrong / "manifest.json").read_text())
    manifest["files"] = record_files(wrong, list(manifest["files"]))  # loads as a copied file
    (wrong / "manifest.json").write_text(json.dumps(manifest))

    repo = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("probe", repo / "scripts/arm/probe.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    text = repo / "scripts/arm/eval_text.txt"
    for name, folder in (("host", packed), ("ref", grid), ("wrong", wrong)):
        args = ["run", str(folder), "--out", str(tmp_path / name), "--text", str(text)]
        probe.main([*args, "--new-tokens", "8", "--max-tokens", "256", "--threads", "1"])
    verdict = {}
    for arm in ("ref", "wrong"):
        base = [str(tmp_path / "host"), str(tmp_path / arm), "--reference", str(tmp_path / "ref")]
        verdict[arm] = probe.main(["compare", *base])
    assert verdict == {"ref": 0, "wrong": 1}
    summary = json.loads((tmp_path / "host.json").read_text())
    assert summary["load_mode"] in ("whole", "split")


def test_outlier_channel_split_is_exact_and_adds_no_step_node(pair, tmp_path, monkeypatch):
    """export/packed/outlier_channels.py moves a norm output's strongest channels out of the
    int8 blocks (gamma * 2^-k, the exact rest in the minima correction): at fp32 activations
    the logits stay those of the file as exported, and a decode step runs the same body nodes
    (the corrections only widen), plus four for the head."""
    import json
    from collections import Counter
    from types import SimpleNamespace

    import onnxruntime as ort

    from tensorgpt.common.contract import past_names
    from tensorgpt.export.packed import outlier_channels as oc

    monkeypatch.setattr(oc, "ENERGY_RATIO", 1.0)  # the tiny model has no massive channels
    _, packed = pair
    config = json.loads((packed / "manifest.json").read_text())["config"]
    shape = SimpleNamespace(**{k: config[k] for k in ("vocab_size", "num_layers", "head_dim")})
    shape.num_kv_heads, shape.max_position_embeddings = config["num_kv_heads"], 64

    def per_step(m: onnx.ModelProto) -> Counter:  # nodes that read the inputs, not load-time
        live, found = {i.name for i in m.graph.input}, Counter()
        for node in m.graph.node:
            if live & set(node.input):
                live.update(node.output)
                found[node.op_type] += 1
        return found

    model = onnx.load(str(packed / "model.onnx"))
    before = per_step(model)
    record = oc.split_outlier_channels(model, shape)
    head = oc.split_head_outliers(model, shape)
    after = per_step(model)
    assert record["norms"] == 2 * shape.num_layers and record["channels"] > 0 and head > 0
    assert after - before == Counter({"Mul": 1, "Gather": 1, "MatMul": 1, "Add": 1})

    def logits(m: onnx.ModelProto, name: str) -> np.ndarray:
        path = tmp_path / name
        onnx.save_model(m, str(path))
        set_accuracy_level(path, 1)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        ids = (np.arange(1, 21, dtype=np.int64)[None, :] * 13) % shape.vocab_size
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        feeds["position_ids"] = np.arange(ids.shape[1], dtype=np.int64)[None, :]
        empty = np.zeros((1, shape.num_kv_heads, 0, shape.head_dim), np.float32)
        feeds.update({n: empty for n in past_names(shape.num_layers)})
        return session.run(["logits"], feeds)[0]

    want = logits(onnx.load(str(packed / "model.onnx")), "before.onnx")
    got = logits(model, "after.onnx")
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, float(np.abs(want).max()))
