"""Load-time memory of the decode subgraphs (q4 weights, transform-coded table).

onnxruntime keeps every tensor its constant folding computes until the folding pass is over,
so the session's peak memory is about the sum of all folded outputs. These tests pin that sum
(in bytes per decoded value) for each decode, and check that the decodes still give exactly
the values the exporter hands to PyTorch.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper, shape_inference

from tensorgpt.export.embedding_transform_code import TransformCodedEmbedding
from tensorgpt.export.graph_builder import GraphBuilder
from tensorgpt.export.weight_blocks import BLOCK, _decode_nodes, quantize_weights_q4
from tensorgpt.tt_ops.row_codecs import decode_q4_blocks, encode_q4_blocks
from tensorgpt.tt_ops.transform_fit import fit_transform_code


def _model(b: GraphBuilder, output: str, inputs=()) -> onnx.ModelProto:
    graph = helper.make_graph(
        b.nodes,
        "decode",
        list(inputs),
        [helper.make_tensor_value_info(output, onnx.TensorProto.FLOAT, None)],
        b.initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)


def _run(model: onnx.ModelProto, feeds=None) -> np.ndarray:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return session.run(None, feeds or {})[0]


def _folded_bytes(model: onnx.ModelProto) -> int:
    """Bytes of every output of a node whose inputs are all constant: what a session holds
    at once while folding them."""
    graph = shape_inference.infer_shapes(model, data_prop=True).graph
    types = {v.name: v.type.tensor_type for v in list(graph.value_info) + list(graph.output)}
    const = {t.name for t in graph.initializer}
    total = 0
    for node in graph.node:
        if node.op_type == "Shape" or not all(i in const for i in node.input if i):
            continue
        for out in node.output:
            const.add(out)
            t = types[out]
            dims = [d.dim_value for d in t.shape.dim]
            assert all(dims), (node.op_type, out, dims)
            total += int(np.prod(dims)) * helper.tensor_dtype_to_np_dtype(t.elem_type).itemsize
    return total


def _q4_grid_weight(rng, k: int, n: int) -> np.ndarray:
    d = rng.uniform(0.001, 0.05, size=(k // BLOCK, 1, n)).astype(np.float16).astype(np.float32)
    m = (-rng.uniform(0, 0.5, size=(k // BLOCK, 1, n))).astype(np.float16).astype(np.float32)
    q = rng.integers(0, 16, size=(k // BLOCK, BLOCK, n)).astype(np.float32)
    q[:, 0, :], q[:, 1, :] = 0, 15
    w = q * d + m
    w[0, :, :3] = m[0, :, :3]  # constant blocks: scale 0
    return w.reshape(k, n)


def test_q4_codes_use_the_gguf_nibble_order():
    """Byte j of a Q4_1 block holds element j (low nibble) and element j + 16 (high)."""
    rng = np.random.default_rng(0)
    w = _q4_grid_weight(rng, 64, 5)
    packed, scale, minimum = encode_q4_blocks(w)
    assert packed.shape == (2, 16, 5) and packed.dtype == np.uint8
    assert scale.shape == minimum.shape == (2, 5) and scale.dtype == np.float16
    d, m = scale.astype(np.float32), minimum.astype(np.float32)
    safe = np.where(d == 0, 1, d)
    q = np.rint((w.reshape(2, 32, 5) - m[:, None]) / safe[:, None]).astype(np.uint8)
    assert np.array_equal(packed & 15, q[:, :16]) and np.array_equal(packed >> 4, q[:, 16:])
    assert np.array_equal(decode_q4_blocks(packed, scale, minimum), w)


def test_q4_graph_decodes_bit_for_bit_and_folds_lean():
    """The ONNX decode gives exactly decode_q4_blocks (scale-0 blocks included), and folding
    it holds 18 bytes per weight, plus the fp32 block scales and minima (the interleaving
    decode before held 20)."""
    rng = np.random.default_rng(1)
    k, n = 96, 40
    w = _q4_grid_weight(rng, k, n)
    packed, scale, minimum = encode_q4_blocks(w)
    b = GraphBuilder("q4")
    out = _decode_nodes(
        b,
        b.const("w0.q4", packed),
        b.const("w0.scale", scale[:, None, :]),
        b.const("w0.min", minimum[:, None, :]),
        k,
        n,
    )
    model = _model(b, out)
    got = _run(model)
    assert got.dtype == np.float32 and np.array_equal(got, decode_q4_blocks(packed, scale, minimum))
    assert np.array_equal(got, w)  # on the grid: recovered exactly
    assert _folded_bytes(model) == 18 * k * n + 2 * 4 * (k // BLOCK) * n


def test_q4_rewrite_keeps_file_bytes_at_five_bits():
    """quantize_weights_q4 stores codes, scales and minima only: 4 + 32/32 bits per weight."""
    rng = np.random.default_rng(2)
    k, n = 64, 48
    w = rng.normal(size=(k, n)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"], name="body/MatMul_1")],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, k])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    decoded, report = quantize_weights_q4(model)
    assert report["weights"] == 1
    big = [t for t in model.graph.initializer if np.prod(t.dims) >= k * n // 32]
    assert sum(len(t.raw_data) for t in big) == k * n // 2 + 2 * 2 * (k * n // BLOCK)
    x = rng.normal(size=(1, k)).astype(np.float32)
    (back,) = decoded.values()
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert np.allclose(session.run(None, {"x": x})[0], x @ back, atol=1e-5)


@pytest.fixture(scope="module")
def code():
    """A small table coded with several classes, bit widths of 1..8 (multi-plane codes and
    padded planes) and an unseen-token floor class."""
    rng = np.random.default_rng(3)
    vocab, dim = 600, 40
    table = (rng.standard_normal((vocab, dim)) * np.linspace(2.0, 0.05, dim) + 0.3).astype(
        np.float32
    )
    counts = rng.zipf(1.4, vocab).astype(np.float64)
    counts[rng.random(vocab) < 0.3] = 0
    return fit_transform_code(table, bits_per_weight=3.0, token_counts=counts)


def test_transform_code_table_matches_decode_and_folds_lean(code):
    assert code.n_classes >= 3 and len({g.bits for g in code.groups}) >= 4
    assert any(len(g.planes) > 1 for g in code.groups)
    emb = TransformCodedEmbedding(code)
    b = GraphBuilder("embedding")
    out = emb.table(b)
    model = _model(b, out)
    got = _run(model)
    want = code.decode()
    assert got.shape == want.shape and got.dtype == np.float32
    # one MatMul over all axes (means included) instead of numpy's order: rounding only
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    # before: int64 codes and a (rows, D) MatMul and Add per (class, bit width) group,
    # 55 bytes per table value here (96 on SmolLM2's table); now a few uint8 passes, one
    # int32 index, one float coefficient and the table, plus the small lookup table
    width = code.basis.shape[0] + code.n_classes
    lookup = code.n_classes * (1 << max(g.bits for g in code.groups)) * width * 4
    assert _folded_bytes(model) <= 30 * code.vocab_size * width + 3 * lookup


def test_transform_code_rows_gather_the_table(code):
    emb = TransformCodedEmbedding(code)
    b = GraphBuilder("embedding")
    out = emb.rows(b, "ids")
    ids = np.array([[0, 5, code.vocab_size - 1, 5]], np.int64)
    model = _model(b, out, [helper.make_tensor_value_info("ids", onnx.TensorProto.INT64, [1, 4])])
    got = _run(model, {"ids": ids})
    assert np.abs(got[0] - code.decode()[ids[0]]).max() <= 1e-5 * np.abs(code.decode()).max()


def test_transform_code_class_without_coded_axes(code):
    """A class whose rows are only its mean (no groups), and a code with no groups at all."""
    import dataclasses

    last = code.n_classes - 1
    for variant in (
        dataclasses.replace(code, groups=[g for g in code.groups if g.cls != last]),
        dataclasses.replace(code, groups=[]),
    ):
        b = GraphBuilder("embedding")
        got = _run(_model(b, TransformCodedEmbedding(variant).table(b)))
        want = variant.decode()
        assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


def _packed_table_graph(emb, monkeypatch, rows_per_chunk: int) -> onnx.ModelProto:
    """The packed 8-bit table (codes, scales) of `emb`, decoded in chunks of that many rows."""
    from tensorgpt.export.packed import table as packed_table

    monkeypatch.setattr(packed_table, "CHUNK_BYTES", rows_per_chunk * 4 * emb.dim)
    b = GraphBuilder("embedding")
    codes, scales = packed_table.PackedTable(emb).tensors(b)
    graph = helper.make_graph(
        b.nodes,
        "table",
        [],
        [
            helper.make_tensor_value_info(codes, onnx.TensorProto.UINT8, None),
            helper.make_tensor_value_info(scales, onnx.TensorProto.FLOAT, None),
        ],
        b.initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)


def _largest_float(model: onnx.ModelProto) -> int:
    """Entries of the largest float tensor any node computes."""
    graph = shape_inference.infer_shapes(model, data_prop=True).graph
    sizes = [
        int(np.prod([d.dim_value for d in v.type.tensor_type.shape.dim]))
        for v in list(graph.value_info) + list(graph.output)
        if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    ]
    return max(sizes)


@pytest.mark.parametrize("kind", ["tc", "svd", "int4-rows"])
def test_packed_table_is_quantized_chunk_by_chunk(kind, monkeypatch):
    """--runtime packed quantizes a compressed table's rows chunk by chunk: no float tensor
    of the whole table's size is ever computed, and the codes are the table's Q8_0 codes."""
    from tensorgpt.export.embedding_graph import LowRankEmbedding, RowQuantizedEmbedding
    from tensorgpt.export.packed.table import decode_q8_blocks, encode_q8_blocks

    rng = np.random.default_rng(4)
    vocab, dim = 2000, 64
    table = (rng.standard_normal((vocab, dim)) * np.linspace(2.0, 0.05, dim) + 0.3).astype(
        np.float32
    )
    if kind == "tc":
        counts = rng.zipf(1.4, vocab).astype(np.float64)
        emb = TransformCodedEmbedding(
            fit_transform_code(table, bits_per_weight=3.0, token_counts=counts)
        )
    elif kind == "svd":
        emb = LowRankEmbedding(table, 16)
    else:
        emb = RowQuantizedEmbedding(table, 4)
    model = _packed_table_graph(emb, monkeypatch, rows_per_chunk=384)  # 6 chunks, one partial
    lookup = 0  # tc's small (C * 2**bits, K + C) coefficient table does not grow with V
    if kind == "tc":
        code = emb.code
        width = code.basis.shape[0] + code.n_classes
        lookup = code.n_classes * (1 << max(g.bits for g in code.groups)) * width
    assert _largest_float(model) <= max(384 * dim, lookup) < vocab * dim
    codes, scales = _run_pair(model)
    want_codes, want_scales = encode_q8_blocks(emb.dense())
    assert codes.shape == want_codes.shape and scales.shape == want_scales.shape
    # the graph's float rows differ from numpy's in the last bits: a code may move by one
    got, want = decode_q8_blocks(codes, scales), decode_q8_blocks(want_codes, want_scales)
    step = np.repeat(want_scales.astype(np.float32), 32, axis=1)
    assert np.all(np.abs(got - want) <= 1.01 * step + 1e-6)
    assert np.mean(codes != want_codes) < 1e-3


def _run_pair(model: onnx.ModelProto) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return session.run(None, {})
