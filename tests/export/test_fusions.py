"""The fused-kernel passes of --runtime packed, each alone on a hand-built graph, and the rule
that keeps quirky families on the unfused attention."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tensorgpt.export.packed.fusions.rms_norm import fuse_rms_norm
from tensorgpt.export.packed.fusions.skip_rms_norm import fuse_skip_rms_norm

DIM = 16


def _rms(b: list, x: str, weight: str, out: str) -> None:
    """The decomposition torch.onnx writes for an RMSNorm (as in the packed body)."""
    b += [
        helper.make_node("Pow", [x, "two"], [f"{out}/sq"]),
        helper.make_node("ReduceMean", [f"{out}/sq", "axes"], [f"{out}/mean"], keepdims=1),
        helper.make_node("Add", [f"{out}/mean", "eps"], [f"{out}/var"]),
        helper.make_node("Sqrt", [f"{out}/var"], [f"{out}/rms"]),
        helper.make_node("Reciprocal", [f"{out}/rms"], [f"{out}/inv"]),
        helper.make_node("Mul", [x, f"{out}/inv"], [f"{out}/normed"]),
        helper.make_node("Mul", [weight, f"{out}/normed"], [out]),
    ]


def _two_norm_graph() -> onnx.ModelProto:
    """x -> norm1 -> h = x + norm1(x) * 2 -> norm2(h): one plain norm, one residual + norm."""
    rng = np.random.default_rng(0)
    nodes: list = []
    _rms(nodes, "x", "w1", "n1")
    nodes.append(helper.make_node("Mul", ["n1", "two"], ["branch"]))
    nodes.append(helper.make_node("Add", ["x", "branch"], ["h"]))
    _rms(nodes, "h", "w2", "y")
    inits = [
        numpy_helper.from_array(np.asarray(2.0, np.float32), "two"),
        numpy_helper.from_array(np.asarray([-1], np.int64), "axes"),
        numpy_helper.from_array(np.asarray(1e-6, np.float32), "eps"),
        numpy_helper.from_array(rng.standard_normal(DIM).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.standard_normal(DIM).astype(np.float32), "w2"),
    ]
    graph = helper.make_graph(
        nodes,
        "norms",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "s", DIM])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "s", DIM]),
            helper.make_tensor_value_info("h", TensorProto.FLOAT, ["b", "s", DIM]),
        ],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return session.run(None, {"x": x})


def test_rms_norm_then_skip_norm_fuse_and_keep_values():
    x = np.random.default_rng(1).standard_normal((2, 3, DIM)).astype(np.float32)
    model = _two_norm_graph()
    want = _run(model, x)
    assert fuse_rms_norm(model) == 2
    assert not any(n.op_type in ("Pow", "Sqrt", "Reciprocal") for n in model.graph.node)
    fused_norms = _run(model, x)
    assert fuse_skip_rms_norm(model) == 1  # only the second norm reads a residual Add
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("SimplifiedLayerNormalization") == 1 and "Add" not in ops
    for got in (fused_norms, _run(model, x)):
        for g, w in zip(got, want):  # y and the residual sum h, which the skip op returns
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_norm_fusion_leaves_other_graphs_alone():
    """A LayerNormalization-style graph (mean subtracted) has no RMSNorm: nothing changes."""
    model = _two_norm_graph()
    for node in model.graph.node:
        if node.op_type == "Pow":
            node.op_type = "Abs"  # no longer x**2: not an RMSNorm
            del node.input[1:]
    before = model.SerializeToString()
    assert fuse_rms_norm(model) == 0 and fuse_skip_rms_norm(model) == 0
    assert model.SerializeToString() == before


@pytest.mark.parametrize(
    "family, reason",
    [
        ("llama", None),
        ("qwen3", "q/k norms"),
        ("mistral", "sliding window"),
        ("phi3", "partial rotary"),
        ("smollm3", "no rotary on layers"),
        ("gemma2", "soft cap"),
    ],
)
def test_attention_fusion_rule(family, reason, tmp_path):
    """Families whose attention has a quirk the fused kernel does not cover stay unfused,
    decided from the adapter before any pattern is looked at."""
    pytest.importorskip("torch")
    import transformers

    from tensorgpt.export.packed.fusions.gqa import gqa_blocker
    from tensorgpt.models import adapter_for
    from tests.conftest import build_checkpoint

    folder = build_checkpoint(tmp_path / family, family)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(folder))
    blocker = gqa_blocker(adapter_for(model))
    if reason is None:
        assert blocker is None
    else:
        assert blocker is not None and reason in blocker
