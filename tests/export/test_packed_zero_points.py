"""export/packed/zero_points.py: zero point 8 keeps the function exact at fp32 activations and
shrinks the error of int8 activations (accuracy_level 4), on one hand-built linear layer."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from tensorgpt.export.packed.verify import set_accuracy_level
from tensorgpt.export.packed.weights import pack_weights_q4
from tensorgpt.export.packed.zero_points import center_zero_points

K, N = 256, 96


def _packed(w: np.ndarray) -> tuple[onnx.ModelProto, np.ndarray]:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"], name="body/MatMul_1")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["m", K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    decoded, _ = pack_weights_q4(model)
    (grid,) = decoded.values()
    return model, grid


def _run(model: onnx.ModelProto, x: np.ndarray, level: int, tmp_path) -> np.ndarray:
    path = tmp_path / f"m{level}.onnx"
    onnx.save_model(model, str(path))
    set_accuracy_level(path, level)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_centered_zero_points_exact_and_smaller_int8_error(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.05, size=(K, N)).astype(np.float32)
    x = rng.normal(size=(4, K)).astype(np.float32)
    plain, grid = _packed(w)
    centered, _ = _packed(w)
    assert center_zero_points(centered) == 1
    node = next(n for n in centered.graph.node if n.op_type == "MatMulNBits")
    # zero point 8 given explicitly (aarch64's int8 path needs it, zero_points.py), built
    # at load from one stored byte: no zero-point bytes in the file
    assert node.input[3] == f"zp8/{N}x{K // 64}"
    assert not any("zero_points" in t.name for t in centered.graph.initializer)
    stored = {t.name: numpy_helper.to_array(t) for t in centered.graph.initializer}
    assert stored["zp8.byte"].tolist() == [0x88] and stored[f"zp8/{N}x{K // 64}.shape"].size == 2

    exact = x @ grid
    scale = np.abs(exact).max()
    # fp32 activations: both compute x @ (d q + m) up to float rounding
    for model in (plain, centered):
        assert np.abs(_run(model, x, 1, tmp_path) - exact).max() <= 1e-5 * scale
    # int8 activations: the centered codes carry less of the activations' rounding error
    err_plain = np.sqrt(np.mean((_run(plain, x, 4, tmp_path) - exact) ** 2))
    err_centered = np.sqrt(np.mean((_run(centered, x, 4, tmp_path) - exact) ** 2))
    assert err_centered < 0.7 * err_plain, (err_centered, err_plain)


def test_center_leaves_other_nodes_alone():
    """A MatMulNBits without the minima correction (the 8-bit head, say) keeps its inputs."""
    graph = helper.make_graph(
        [
            helper.make_node(
                "MatMulNBits",
                ["x", "B", "s", "z"],
                ["y"],
                domain="com.microsoft",
                K=32,
                N=4,
                bits=4,
                block_size=32,
            )
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [
            numpy_helper.from_array(np.zeros((4, 1, 16), np.uint8), "B"),
            numpy_helper.from_array(np.ones((4, 1), np.float32), "s"),
            numpy_helper.from_array(np.zeros((4, 1), np.uint8), "z"),
        ],
    )
    model = helper.make_model(graph)
    assert center_zero_points(model) == 0
    assert list(model.graph.node[0].input) == ["x", "B", "s", "z"]
