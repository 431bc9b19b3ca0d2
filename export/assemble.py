"""Attach the token embedding (input side) and the LM head (output side) to the body graph.

body:   inputs_embeds, mask, positions, past  ->  hidden_states, present
result: input_ids,     mask, positions, past  ->  logits,        present

The head is `Gemm(hidden (N, D), table (V, D), transB=1)`: no transposed copy of the table is
made, and for a tied compressed table `table` is the embedding's own rebuild subgraph, which
onnxruntime folds once at session load.

Two adapter hooks (models/base.py) act here: `embedding_scale` multiplies the looked-up rows
(input side only; the tied head uses the unscaled table, as in PyTorch), and `head_quirks`
applies logit multiplier, divisor and soft cap after the head, in PyTorch's order.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from tensorgpt.export.embedding_graph import DenseEmbedding, EmbeddingGraph
from tensorgpt.export.graph_builder import GraphBuilder
from tensorgpt.models.base import HeadQuirks


def attach_embedding_and_head(
    body: onnx.ModelProto,
    embedding: EmbeddingGraph,
    untied_head: np.ndarray | EmbeddingGraph | None = None,
    head_bias: np.ndarray | None = None,
    embedding_scale: float | None = None,
    head_quirks: HeadQuirks | None = None,
) -> onnx.ModelProto:
    """Return `body` rewired to take input_ids and produce logits (modified in place).

    untied_head: the (V, D) output matrix when the model does not tie it to the embedding
    (or an EmbeddingGraph whose `table` stores it: a streaming export's placeholder).
    """
    graph = body.graph
    embed = GraphBuilder("embedding")
    rows = embedding.rows(embed, "input_ids")
    if embedding_scale is not None:
        rows = embed.op("Mul", [rows, embed.const("scale", np.float32(embedding_scale))])
    embed.op("Identity", [rows], output="inputs_embeds")

    head = GraphBuilder("lm_head")
    if untied_head is None:
        table = embedding.table(embed)  # same builder: a dense tied table is stored once
    elif isinstance(untied_head, EmbeddingGraph):
        table = untied_head.table(head)
    else:
        table = DenseEmbedding(untied_head).table(head)
    vocab = embedding.vocab_size
    flat = head.op("Reshape", ["hidden_states", head.ints("flat_shape", [-1, embedding.dim])])
    gemm_inputs = [flat, table]
    if head_bias is not None:
        gemm_inputs.append(head.const("bias", np.asarray(head_bias, dtype=np.float32)))
    logits = head.op("Gemm", gemm_inputs, transB=1)
    if untied_head is None:
        logits = apply_logit_fix(embed, head, embedding, logits, flat)
    logits = _head_quirks(head, logits, head_quirks)
    lead = head.op("Shape", ["hidden_states"], start=0, end=2)
    shape = head.op("Concat", [lead, head.ints("vocab", [vocab])], axis=0)
    head.op("Reshape", [logits, shape], output="logits")

    _replace_value(
        graph.input,
        "inputs_embeds",
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
    )
    _replace_value(
        graph.output,
        "hidden_states",
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", vocab]),
    )
    body_nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(embed.nodes + body_nodes + head.nodes)
    graph.initializer.extend(embed.initializers + head.initializers)
    return body


def apply_logit_fix(
    store: GraphBuilder, b: GraphBuilder, embedding, logits: str, hidden: str
) -> str:
    """logits * scale + (1 - scale) * anchor logits + bias when the tied table carries a
    correction (EmbeddingGraph.logit_fix, anchor_logits from `hidden`, the head's input):
    fp16 initializers in `store` (the embedding's builder, so their bytes count as the
    table's), Cast to fp32 (folded at load), Mul and Add in `b` after the head's product."""
    scale, bias = embedding.logit_fix()
    if scale is not None:
        factor = store.op("Cast", [store.const("logit_scale", scale.astype(np.float16))], to=1)
        logits = b.op("Mul", [logits, factor])
        anchor = embedding.anchor_logits(store, b, hidden)
        if anchor is not None:
            rest = store.op("Sub", [store.const("one_f", np.float32(1.0)), factor])
            logits = b.op("Add", [logits, b.op("Mul", [anchor, rest])])
    if bias is not None:
        shift = store.op("Cast", [store.const("logit_bias", bias.astype(np.float16))], to=1)
        logits = b.op("Add", [logits, shift])
    return logits


def _head_quirks(b: GraphBuilder, logits: str, quirks: HeadQuirks | None) -> str:
    """logits * multiply / divide, then softcap * tanh(logits / softcap): PyTorch's ops."""
    if quirks is None:
        return logits
    if quirks.multiply is not None:
        logits = b.op("Mul", [logits, b.const("logit_multiply", np.float32(quirks.multiply))])
    if quirks.divide is not None:
        logits = b.op("Div", [logits, b.const("logit_divide", np.float32(quirks.divide))])
    if quirks.softcap is not None:
        cap = b.const("logit_softcap", np.float32(quirks.softcap))
        logits = b.op("Mul", [b.op("Tanh", [b.op("Div", [logits, cap])]), cap])
    return logits


def _replace_value(values, old: str, new: onnx.ValueInfoProto) -> None:
    """Swap the graph input or output named `old` for `new`, keeping its position."""
    for i, value in enumerate(values):
        if value.name == old:
            values.remove(value)
            values.insert(i, new)
            return
    raise RuntimeError(f"body graph has no input or output {old}")


def assert_no_dense_table(model: onnx.ModelProto, vocab: int, dim: int, tied: bool) -> None:
    """The tied-head trap: a compressed export must not carry a float V x D (or D x V) matrix.

    (int8 codes of the whole table are the compressed format of the int8-rows baseline; an
    untied head, Mistral or Phi-3, is a matrix of its own, stored dense under `lm_head.`.)
    """
    floats = {
        onnx.TensorProto.FLOAT,
        onnx.TensorProto.FLOAT16,
        onnx.TensorProto.DOUBLE,
        onnx.TensorProto.BFLOAT16,
    }
    for tensor in model.graph.initializer:
        if not tied and tensor.name.startswith("lm_head."):
            continue
        if tensor.data_type in floats and sorted(tensor.dims) == sorted([vocab, dim]):
            raise RuntimeError(
                f"compressed export still holds a dense {list(tensor.dims)} tensor {tensor.name}"
            )
