"""Fuse each Llama-shaped attention block of the packed graph into onnxruntime's
com.microsoft RotaryEmbedding (q and k) + GroupQueryAttention.

Why anchor-and-emit rather than matching the whole pattern: torch.onnx's decomposition of an
HF attention layer (mask building, repeat_kv expands, the NaN guard after Softmax) changes
with torch and transformers versions, and onnxruntime.transformers' fusion_rotary_attention
matches older TorchScript exports only. What is stable is the export contract: the graph
output `present.{i}.key` is Concat(`past_key_values.{i}.key`, rotary(k)) and
`present.{i}.value` is Concat(past value, v), both in BNSH, and every projection is a
(B, S, N*d) tensor reshaped to (B, S, N, d) and transposed to BNSH. So this pass finds, per
layer, four tensors from those anchors (the q/k/v projections and the (B, S, N*d) input of
o_proj), emits the fused block from the model's config (heads, scale, rotary cos/sin tables
from the model's own rotary module) and lets dead-node removal drop the decomposed nodes.
Whether a family may be fused is decided by rule from the adapter (no quirks: no sliding
window, soft cap, q/k norm, partial or missing rotary, no length-dependent rope), never by a
pattern that happens to match; the export's parity check then verifies the result.

Semantics kept from the unfused graph:
- positions: RotaryEmbedding reads the graph's `position_ids` (left-padded batches keep their
  own positions). GroupQueryAttention's own rotary (do_rotary, with packed q/k/v it would save
  the Split and two nodes per layer) was tried: onnxruntime 1.32's CPU kernel rotates a first
  prompt's cached keys by cache slot even when position_ids are given (a left-padded row's
  keys then sit 2 positions off; measured), so it is not used.
- padding: seqlens_k is total-1 for every row (all cache slots "valid" to GQA) and the
  attention_mask enters as an additive bias (B, 1, S, T): 0 where 1, float32 lowest where 0
  (finite, so fully padded query rows stay finite and cannot poison the cache).
- causality: GQA's causal mask over cache slots equals the body's.
Limit (onnxruntime's kernel): batch > 1 with a multi-token chunk on top of a non-empty cache is
refused with an error at run time; the runtime prefills from an empty cache and then decodes
one token per step, which is supported.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tensorgpt.common.contract import ATTENTION_MASK, POSITION_IDS, past_names, present_names
from tensorgpt.export.packed.graph_walk import nodes_feeding
from tensorgpt.export.packed.weights import MS_DOMAIN

# rope types whose cos/sin depend on the position only (a static table); "dynamic" and
# "longrope" rescale with the sequence length
STATIC_ROPE = {"default", "linear", "llama3", "yarn"}
_ROTARY_OPS = {"Add", "Mul", "Concat", "Neg", "Slice"}
PREFIX = "gqa"


def gqa_blocker(adapter) -> str | None:
    """Why the attention of `adapter`'s model must stay unfused, or None if it may be fused."""
    config = adapter.config
    quirks = [q for q in adapter.quirks() if q != "fused gate/up"]
    if quirks:
        return f"quirks {quirks}"
    body = adapter.decoder_body()
    if getattr(body, "rotary_emb", None) is None or not adapter.position_encoding.startswith(
        "rotary"
    ):
        return "no rotary embedding module"
    params = getattr(config, "rope_parameters", None) or {}
    rope_type = params.get("rope_type", "default") if isinstance(params, dict) else "default"
    if rope_type not in STATIC_ROPE:
        return f"rope type {rope_type!r} depends on the sequence length"
    layers = getattr(body, "layers", None)
    if layers is None or any(not hasattr(getattr(m, "self_attn", None), "scaling") for m in layers):
        return "attention modules without a `scaling`"
    shape = adapter.shape()
    if shape.num_kv_heads <= 0 or _heads(adapter) % shape.num_kv_heads:
        return "heads not a multiple of kv heads"
    if shape.max_position_embeddings <= 0:
        return "no max_position_embeddings for the rotary tables"
    return None


def _heads(adapter) -> int:
    return int(adapter.config.num_attention_heads)


def rotary_tables(adapter) -> tuple[np.ndarray, np.ndarray]:
    """(cos, sin), each (max_positions, head_dim / 2), from the model's own rotary module
    (its inv_freq and attention scaling, i.e. what the body computes per position)."""
    import torch

    shape = adapter.shape()
    positions = torch.arange(shape.max_position_embeddings)[None, :]
    probe = torch.zeros(1, 1, shape.head_dim)
    with torch.no_grad():
        cos, sin = adapter.decoder_body().rotary_emb(probe, positions)
    half = shape.head_dim // 2
    return (
        np.ascontiguousarray(cos[0, :, :half].float().numpy()),
        np.ascontiguousarray(sin[0, :, :half].float().numpy()),
    )


def fuse_attention(model: onnx.ModelProto, adapter) -> int:
    """Rewrite `model` in place; returns the number of fused layers (0 when the rule or any
    layer's anchors say no: then the graph is left exactly as it was)."""
    if gqa_blocker(adapter) is not None:
        return 0
    graph = model.graph
    shape = adapter.shape()
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    blocks = []
    for i, (pk, pv), (ck, cv) in zip(
        range(shape.num_layers),
        _pairs(past_names(shape.num_layers)),
        _pairs(present_names(shape.num_layers)),
    ):
        found = _anchors(producer, consumers, pk, pv, ck, cv)
        if found is None:
            return 0
        blocks.append((i, pk, pv, ck, cv, *found))

    cos, sin = rotary_tables(adapter)
    heads, kv_heads = _heads(adapter), shape.num_kv_heads
    layers = adapter.decoder_body().layers
    new_nodes, inits = _shared(cos, sin)
    drop = set()
    for i, pk, pv, ck, cv, q, k, v, out, replaced in blocks:
        qr, kr = f"{PREFIX}/{i}/q_rot", f"{PREFIX}/{i}/k_rot"
        for x, y, n in ((q, qr, heads), (k, kr, kv_heads)):
            new_nodes.append(
                helper.make_node(
                    "RotaryEmbedding",
                    [x, POSITION_IDS, f"{PREFIX}.cos", f"{PREFIX}.sin"],
                    [y],
                    name=f"{y}/RotaryEmbedding",
                    domain=MS_DOMAIN,
                    num_heads=n,
                    interleaved=0,
                )
            )
        new_nodes.append(
            helper.make_node(
                "GroupQueryAttention",
                [
                    qr,
                    kr,
                    v,
                    pk,
                    pv,
                    f"{PREFIX}/seqlens_k",
                    f"{PREFIX}/total",
                    "",
                    "",
                    "",
                    f"{PREFIX}/bias",
                ],
                [out, ck, cv],
                name=f"{PREFIX}/{i}/GroupQueryAttention",
                domain=MS_DOMAIN,
                num_heads=heads,
                kv_num_heads=kv_heads,
                scale=float(layers[i].self_attn.scaling),
            )
        )
        drop.update(id(n) for n in replaced)
    kept = [n for n in graph.node if id(n) not in drop]
    _replace_nodes(graph, _topological(kept + new_nodes, graph), inits)
    return len(blocks)


def _pairs(names: list[str]) -> list[tuple[str, str]]:
    return list(zip(names[0::2], names[1::2]))


def _anchors(producer, consumers, pk, pv, ck, cv):
    """(q, k, v, attention output, nodes whose outputs the fused block now produces) or None."""
    cat_k, cat_v = producer.get(ck), producer.get(cv)
    if not _is_cache_concat(cat_k, pk) or not _is_cache_concat(cat_v, pv):
        return None
    v = _projection(producer, cat_v.input[1])
    k = _projection(producer, _rotary_source(producer, cat_k.input[1]))
    scores = _first_downstream(consumers, ck, "MatMul")
    if v is None or k is None or scores is None:
        return None
    q_side = next((x for x in scores.input if not _depends_on(producer, x, ck)), None)
    q = None if q_side is None else _projection(producer, _rotary_source(producer, q_side))
    mixed = _first_downstream(consumers, scores.output[0], "MatMul")
    if q is None or mixed is None:
        return None
    users = consumers.get(mixed.output[0], [])
    if len(users) != 1 or not _is_bnsh_transpose(users[0]):
        return None
    reshape = consumers.get(users[0].output[0], [])
    if len(reshape) != 1 or reshape[0].op_type != "Reshape":
        return None
    return q, k, v, reshape[0].output[0], [cat_k, cat_v, reshape[0]]


def _is_cache_concat(node, past: str) -> bool:
    return (
        node is not None
        and node.op_type == "Concat"
        and len(node.input) == 2
        and node.input[0] == past
    )


def _is_bnsh_transpose(node) -> bool:
    perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
    return node.op_type == "Transpose" and perm == [0, 2, 1, 3]


def _projection(producer, bnsh: str | None) -> str | None:
    """The (B, S, N*d) tensor behind Transpose(0,2,1,3)(Reshape(x)), or None."""
    t = producer.get(bnsh) if bnsh else None
    if t is None or not _is_bnsh_transpose(t):
        return None
    r = producer.get(t.input[0])
    return r.input[0] if r is not None and r.op_type == "Reshape" else None


def _rotary_source(producer, name: str) -> str | None:
    """The one BNSH transpose that the rotary arithmetic above `name` reads (x*cos +
    rotate_half(x)*sin, possibly times a scale); None if there is not exactly one."""
    found, seen, stack = set(), set(), [name]
    while stack:
        cur = stack.pop()
        if cur in seen:
            continue
        seen.add(cur)
        node = producer.get(cur)
        if node is None:
            continue
        if _is_bnsh_transpose(node):
            found.add(cur)
        elif node.op_type in _ROTARY_OPS and len(seen) < 64:
            stack.extend(node.input)
    return found.pop() if len(found) == 1 else None


def _first_downstream(consumers, name: str, op_type: str):
    """Breadth-first from `name` along consumers: the first node of `op_type`."""
    frontier, seen = [name], set()
    while frontier:
        nxt = []
        for cur in frontier:
            for node in consumers.get(cur, []):
                if node.op_type == op_type:
                    return node
                if id(node) not in seen:
                    seen.add(id(node))
                    nxt.extend(node.output)
        frontier = nxt
    return None


def _depends_on(producer, name: str, target: str) -> bool:
    seen, stack = set(), [name]
    while stack:
        cur = stack.pop()
        if cur == target:
            return True
        if cur in seen or cur not in producer:
            continue
        seen.add(cur)
        stack.extend(producer[cur].input)
    return False


def _shared(cos: np.ndarray, sin: np.ndarray):
    """Nodes and initializers all layers share: rotary tables, seqlens_k, total length, mask
    bias."""
    inits = [
        numpy_helper.from_array(cos, f"{PREFIX}.cos"),
        numpy_helper.from_array(sin, f"{PREFIX}.sin"),
        numpy_helper.from_array(np.asarray([1], np.int64), f"{PREFIX}.one"),
        numpy_helper.from_array(np.asarray([0], np.int64), f"{PREFIX}.zero"),
        numpy_helper.from_array(np.asarray([1, 2], np.int64), f"{PREFIX}.axes12"),
        numpy_helper.from_array(np.asarray(0, np.float32), f"{PREFIX}.open"),
        numpy_helper.from_array(
            np.asarray(np.finfo(np.float32).min, np.float32), f"{PREFIX}.closed"
        ),
    ]
    p = PREFIX
    nodes = [
        helper.make_node("Shape", [ATTENTION_MASK], [f"{p}/mask_shape"]),
        helper.make_node("Gather", [f"{p}/mask_shape", f"{p}.one"], [f"{p}/total64"], axis=0),
        helper.make_node("Gather", [f"{p}/mask_shape", f"{p}.zero"], [f"{p}/batch"], axis=0),
        helper.make_node("Squeeze", [f"{p}/total64", f"{p}.zero"], [f"{p}/total64s"]),
        helper.make_node("Cast", [f"{p}/total64s"], [f"{p}/total"], to=TensorProto.INT32),
        helper.make_node("Sub", [f"{p}/total64", f"{p}.one"], [f"{p}/last"]),
        helper.make_node("Expand", [f"{p}/last", f"{p}/batch"], [f"{p}/last_b"]),
        helper.make_node("Cast", [f"{p}/last_b"], [f"{p}/seqlens_k"], to=TensorProto.INT32),
        helper.make_node("Cast", [ATTENTION_MASK], [f"{p}/keep"], to=TensorProto.BOOL),
        helper.make_node("Unsqueeze", [f"{p}/keep", f"{p}.axes12"], [f"{p}/keep4"]),
        helper.make_node("Where", [f"{p}/keep4", f"{p}.open", f"{p}.closed"], [f"{p}/bias1"]),
        # onnxruntime wants the bias at full (B, 1, S, T); S from position_ids (B, S)
        helper.make_node("Shape", [POSITION_IDS], [f"{p}/pos_shape"]),
        helper.make_node("Gather", [f"{p}/pos_shape", f"{p}.one"], [f"{p}/seq"], axis=0),
        helper.make_node(
            "Concat",
            [f"{p}/batch", f"{p}.one", f"{p}/seq", f"{p}/total64"],
            [f"{p}/bias_shape"],
            axis=0,
        ),
        helper.make_node("Expand", [f"{p}/bias1", f"{p}/bias_shape"], [f"{p}/bias"]),
    ]
    return nodes, inits


def _topological(nodes: list[onnx.NodeProto], graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """Nodes in an order where every input is produced first (stable otherwise)."""
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    ready |= {f"{PREFIX}.{n}" for n in ("cos", "sin", "one", "zero", "axes12", "open", "closed")}
    out, pending = [], list(nodes)
    while pending:
        rest = []
        for node in pending:
            if all(i in ready for i in node.input):
                out.append(node)
                ready.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise ValueError(f"attention fusion left a cycle or a missing input at {rest[0].name}")
        pending = rest
    return out


def _replace_nodes(graph, nodes, new_inits) -> None:
    """Set the node list, then drop every node and initializer no graph output depends on."""
    kept = nodes_feeding(nodes, (o.name for o in graph.output))
    read = {i for n in kept for i in n.input}
    inits = [t for t in list(graph.initializer) + new_inits if t.name in read]
    del graph.node[:]
    graph.node.extend(kept)
    del graph.initializer[:]
    graph.initializer.extend(inits)
