"""export/dedupe_matmuls.py: a shared projection is stored once and multiplied once."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from tensorgpt.export.dedupe_matmuls import dedupe_matmuls


def _graph(shared_transpose: bool) -> onnx.ModelProto:
    """y = sum over 3 readers of x @ A^T, A (4, 8): one Transpose node of A read by three
    MatMuls (SmolLM2's trace), or three equal transposed copies (a tiny model's trace)."""
    a = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    inits, nodes = [], []
    if shared_transpose:
        inits.append(numpy_helper.from_array(a, "A"))
        nodes.append(helper.make_node("Transpose", ["A"], ["At"], perm=[1, 0]))
        weights = ["At"] * 3
    else:
        weights = [f"At{i}" for i in range(3)]
        inits += [numpy_helper.from_array(np.ascontiguousarray(a.T), w) for w in weights]
    nodes += [helper.make_node("MatMul", ["x", w], [f"p{i}"]) for i, w in enumerate(weights)]
    nodes += [helper.make_node("Sum", ["p0", "p1", "p2"], ["y"])]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@pytest.mark.parametrize("shared_transpose", [True, False])
def test_one_initializer_one_matmul_same_output(shared_transpose):
    model = _graph(shared_transpose)
    x = np.random.default_rng(1).standard_normal((2, 8)).astype(np.float32)
    before = _run(model, x)
    report = dedupe_matmuls(model)
    onnx.checker.check_model(model)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("MatMul") == 1 and "Transpose" not in ops
    assert [list(t.dims) for t in model.graph.initializer] == [[8, 4]]
    assert report["matmuls"] == 2
    np.testing.assert_allclose(_run(model, x), before, rtol=1e-6, atol=1e-6)
