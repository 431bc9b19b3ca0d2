"""Attach the packed token table (export/packed/table.py) as the input lookup and the head.

The packed twin of export/assemble.py: same graph inputs and outputs, but the lookup gathers
8-bit rows and the head is one 8-bit MatMulNBits over the same codes, so no (V, D) fp32
matrix exists in the file or in the session.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from tensorgpt.export.assemble import _replace_value, apply_logit_fix
from tensorgpt.export.embedding_graph import DenseEmbedding, EmbeddingGraph
from tensorgpt.export.graph_builder import GraphBuilder
from tensorgpt.export.packed.graph_walk import nodes_feeding
from tensorgpt.export.packed.table import PackedTable
from tensorgpt.export.packed.weights import use_ms_domain


def attach_packed_embedding_and_head(
    body: onnx.ModelProto,
    embedding: EmbeddingGraph,
    untied_head: np.ndarray | None = None,
    head_bias: np.ndarray | None = None,
) -> tuple[onnx.ModelProto, PackedTable, PackedTable]:
    """Return `body` rewired to input_ids -> logits (in place), the lookup's packed table and
    the head's (the same object for a tied head)."""
    graph = body.graph
    table = PackedTable(embedding)
    embed = GraphBuilder("embedding")
    rows = table.rows(embed, "input_ids")
    embed.op("Identity", [rows], output="inputs_embeds")

    if untied_head is None:
        head_table, head = table, embed  # same builder: one set of codes
    else:
        head_table, head = PackedTable(DenseEmbedding(untied_head)), GraphBuilder("lm_head")
    bias = "" if head_bias is None else head.const("bias", np.asarray(head_bias, np.float32))
    logits = head_table.head(head, "hidden_states", bias)
    if untied_head is None:
        logits = apply_logit_fix(embed, head, embedding, logits, "hidden_states")
    head.op("Identity", [logits], output="logits")

    _replace_value(
        graph.input,
        "inputs_embeds",
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
    )
    vocab = embedding.vocab_size
    _replace_value(
        graph.output,
        "hidden_states",
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", vocab]),
    )
    # the tied head's nodes sit in `embed` too: move those after the body
    first = [n for n in embed.nodes if "hidden_states" not in _ancestry(n, embed.nodes)]
    last = [n for n in embed.nodes if n not in first]
    tail = last + (head.nodes if head is not embed else [])
    body_nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(first + body_nodes + tail)
    graph.initializer.extend(embed.initializers + (head.initializers if head is not embed else []))
    use_ms_domain(body)
    return body, table, head_table


def _ancestry(node: onnx.NodeProto, nodes: list[onnx.NodeProto]) -> set[str]:
    """Every tensor name `node` depends on within `nodes` (plus its own inputs)."""
    return set(node.input) | {i for n in nodes_feeding(nodes, node.input) for i in n.input}
