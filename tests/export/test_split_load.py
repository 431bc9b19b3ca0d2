"""decode.onnx + body.onnx: the split form of model.onnx that loads with a lower peak."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from tensorgpt.common.ort_load import open_split_session, session_options
from tensorgpt.export import split_load
from tensorgpt.export.compress import CompressionSpec
from tensorgpt.export.exporter import export_model


@pytest.fixture(scope="module")
def split_export(tiny_llama, tmp_path_factory) -> tuple[Path, dict]:
    """tiny Llama, transform-coded table + q4 weights, split written (no size threshold)."""
    folder = tmp_path_factory.mktemp("split") / "tc-q4"
    calib = folder.parent / "calib.txt"
    calib.write_text("The quick brown fox jumps over the lazy dog. It was a sunny day. " * 300)
    spec = CompressionSpec(method="tc", bits_per_weight=3.0, calib_text=str(calib))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(split_load, "MIN_FRONTIER_BYTES", 0)
        manifest = export_model(str(tiny_llama), folder, spec, quantize="q4", log=lambda _: None)
    return folder, manifest


def test_export_writes_a_checked_split(split_export):
    folder, manifest = split_export
    split = manifest["split_load"]
    assert split is not None and split["verification"]["passed"]
    assert split["verification"]["max_abs_logit_diff_vs_model_onnx"] <= 1e-6
    assert (folder / split["decode"]).is_file() and (folder / split["body"]).is_file()
    assert split["frontier_tensors"] > 0 and split["decoded_bytes"] > 0


def test_split_files_reference_model_onnx_instead_of_copying(split_export):
    """Every large tensor is an external-data reference into model.onnx whose bytes equal the
    original initializer's."""
    folder, _ = split_export
    whole = {t.name: t for t in onnx.load(str(folder / "model.onnx")).graph.initializer}
    for name in (split_load.DECODE_FILE, split_load.BODY_FILE):
        graph = onnx.load(str(folder / name), load_external_data=False).graph
        refs = 0
        for tensor in graph.initializer:
            assert len(tensor.raw_data) < split_load._INLINE_BELOW, (name, tensor.name)
            location = {e.key: e.value for e in tensor.external_data}.get("location")
            if location == "model.onnx":
                refs += 1
                info = {e.key: int(e.value) for e in tensor.external_data if e.key != "location"}
                with open(folder / "model.onnx", "rb") as fh:
                    fh.seek(info["offset"])
                    assert fh.read(info["length"]) == whole[tensor.name].raw_data
        if name == split_load.DECODE_FILE:
            assert refs > 0


def _graph(nodes, inits, inputs=(), outputs=("y",)) -> onnx.GraphProto:
    return helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
        [numpy_helper.from_array(np.ones(v, np.float32), n) for n, v in inits.items()],
    )


def test_decode_nodes_are_the_weight_cone_only():
    """Initializer-only nodes move; a Constant-only cone stays (copied where decode nodes read
    it); DequantizeLinear stays."""
    nodes = [
        helper.make_node("Constant", [], ["perm"], value_ints=[1, 0]),  # helper of Transpose
        helper.make_node("Mul", ["w", "s"], ["w_scaled"]),  # decode
        helper.make_node("Cast", ["perm"], ["perm64"], to=TensorProto.INT64),  # helper
        helper.make_node("Reshape", ["w_scaled", "perm64"], ["w_t"]),  # decode, frontier
        helper.make_node("Constant", [], ["shape"], value_ints=[2, 2]),
        helper.make_node("Reshape", ["x", "shape"], ["x2"]),  # graph input: body
        helper.make_node("DequantizeLinear", ["q", "s"], ["dq"]),  # not folded by ORT: body
        helper.make_node("MatMul", ["x2", "w_t"], ["m"]),
        helper.make_node("Add", ["m", "dq"], ["y"]),
    ]
    graph = _graph(nodes, {"w": (2, 2), "s": (), "q": (2, 2)}, inputs=("x",))
    picked, frontier, helpers = split_load.decode_nodes(graph)
    assert [graph.node[i].op_type for i in picked] == ["Mul", "Reshape"]
    assert frontier == ["w_t"]
    assert [graph.node[i].op_type for i in helpers] == ["Constant", "Cast"]


def test_no_split_without_a_decode_subgraph(tmp_path):
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"])]
    model = helper.make_model(
        _graph(nodes, {"w": (4, 4)}, inputs=("x",)),
        opset_imports=[helper.make_opsetid("", 18)],
        ir_version=9,
    )
    onnx.save(model, str(tmp_path / "model.onnx"))
    assert split_load.write_split(tmp_path) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_placeholders_are_never_read(split_export):
    """Loading body.onnx without the decoded tensors fails loudly instead of reading bytes."""
    folder, _ = split_export
    options = ort.SessionOptions()
    options.log_severity_level = 4
    with pytest.raises(Exception, match="decoded-at-load|External data|external data"):
        ort.InferenceSession(str(folder / split_load.BODY_FILE), options)


@pytest.mark.parametrize("external", [False, True], ids=["embedded", "model.onnx.data"])
def test_split_of_a_small_graph_matches_it(tmp_path, monkeypatch, external):
    """Weights inside model.onnx or in model.onnx.data, a Constant read by the decode: the
    split gives the same output."""
    monkeypatch.setattr(split_load, "MIN_FRONTIER_BYTES", 0)
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 32)).astype(np.float32)
    nodes = [
        helper.make_node("Constant", [], ["shape"], value_ints=[64, 32]),  # read by decode
        helper.make_node("Mul", ["w", "s"], ["w_scaled"]),
        helper.make_node("Reshape", ["w_scaled", "shape"], ["w_shaped"]),
        helper.make_node("MatMul", ["x", "w_shaped"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 32])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.float32(0.5), "s")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    onnx.save_model(
        model,
        str(tmp_path / "model.onnx"),
        save_as_external_data=external,
        location="model.onnx.data",
        size_threshold=0,
    )
    summary = split_load.write_split(tmp_path)
    assert summary is not None and summary["frontier_tensors"] == 1
    x = rng.standard_normal((2, 64)).astype(np.float32)
    whole = ort.InferenceSession(str(tmp_path / "model.onnx")).run(None, {"x": x})[0]
    split = open_split_session(
        tmp_path / split_load.DECODE_FILE,
        tmp_path / split_load.BODY_FILE,
        session_options(None),
        threads=None,
    ).run(None, {"x": x})[0]
    np.testing.assert_array_equal(split, whole)
    np.testing.assert_allclose(whole, x @ (w * 0.5), rtol=1e-5, atol=1e-5)


def test_split_command_adds_the_files_to_an_older_export(split_export, tmp_path, capsys):
    import json
    import shutil

    from tensorgpt.cli import main

    folder = tmp_path / "older"
    shutil.copytree(split_export[0], folder)
    for name in (split_load.DECODE_FILE, split_load.BODY_FILE):
        (folder / name).unlink()
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.pop("split_load")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(split_load, "MIN_FRONTIER_BYTES", 0)
        assert main(["split", str(folder)]) == 0
    assert "max abs logit diff vs model.onnx" in capsys.readouterr().out
    split = json.loads((folder / "manifest.json").read_text())["split_load"]
    assert split["verification"]["passed"]
    assert (folder / split_load.DECODE_FILE).read_bytes() == (
        split_export[0] / split_load.DECODE_FILE
    ).read_bytes()


def test_split_command_rejects_a_non_export(tmp_path, capsys):
    from tensorgpt.cli import main

    assert main(["split", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "not an exported folder" in err and "\n" not in err
