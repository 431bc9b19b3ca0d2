"""Fuse the packed projections that read the same activations (q/k/v, gate/up) into one.

After export/packed/weights.py each weight is

    y_i = Add(MatMulNBits(x; B_i, Cast(d_i), z), MatMul(S, Cast(m_i)))      S = blocksum(x)

and q, k, v (gate, up) share x and S. One MatMulNBits over B_1..B_n stacked along N, one
correction MatMul over m_1..m_n, one Add and a Split give the same values column for column
(each output column is computed exactly as before: MatMulNBits' columns are independent).
Why: at batch 1 a decode step is many small kernels; this removes 2(n-1) MatMul-type nodes and
n-1 Adds per group (onnxruntime-genai's builder packs q/k/v and gate/up the same way).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import helper, numpy_helper

from tensorgpt.export.packed.weights import MS_DOMAIN


def fuse_shared_inputs(model: onnx.ModelProto) -> int:
    """Rewrite `model` in place; returns how many groups were fused."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)

    def cast_source(name: str) -> str | None:
        node = producer.get(name)
        if node is None or node.op_type != "Cast" or node.input[0] not in inits:
            return None
        return node.input[0]

    groups: dict[tuple, list[tuple]] = defaultdict(list)
    for node in graph.node:
        unit = _unit(node, inits, producer, consumers, cast_source)
        if unit is not None:
            attrs = tuple(sorted((a.name, a.i) for a in node.attribute if a.name != "N"))
            groups[(node.input[0], attrs)].append(unit)

    # q (N = H*d) and k, v (N = kv_heads*d each) have zero-point tensors of different shapes
    # but all 0, so the group key is the input and the attributes other than N
    drop: set[int] = set()
    replace: dict[int, list[onnx.NodeProto]] = {}
    new_inits: list[onnx.TensorProto] = []
    fused = 0
    for (x, _), units in groups.items():
        if len(units) < 2:
            continue
        fused += 1
        tag = f"fused{fused}"
        mnb, add, corr = units[0][0], units[0][1], units[0][2]
        ns = [int(_attr(u[0], "N")) for u in units]
        codes = np.concatenate([numpy_helper.to_array(inits[u[0].input[1]]) for u in units])
        scale = np.concatenate([numpy_helper.to_array(inits[u[3]]) for u in units])
        minimum = np.concatenate([numpy_helper.to_array(inits[u[4]]) for u in units], axis=1)
        zeros = np.zeros((sum(ns), numpy_helper.to_array(inits[mnb.input[3]]).shape[1]), np.uint8)
        for name, value in (
            (f"{tag}.q4", codes),
            (f"{tag}.scale", scale),
            (f"{tag}.min", minimum),
            (f"{tag}.zero_points", zeros),
        ):
            new_inits.append(numpy_helper.from_array(value, name))
        attrs = {a.name: a.i for a in mnb.attribute}
        attrs["N"] = sum(ns)
        nodes = [
            helper.make_node("Cast", [f"{tag}.scale"], [f"{tag}/scale32"], to=1),
            helper.make_node("Cast", [f"{tag}.min"], [f"{tag}/min32"], to=1),
            helper.make_node(
                "MatMulNBits",
                [x, f"{tag}.q4", f"{tag}/scale32", f"{tag}.zero_points"],
                [f"{tag}/main"],
                name=f"{tag}/MatMulNBits",
                domain=MS_DOMAIN,
                **attrs,
            ),
            helper.make_node("MatMul", [corr.input[0], f"{tag}/min32"], [f"{tag}/corr"]),
            helper.make_node("Add", [f"{tag}/main", f"{tag}/corr"], [f"{tag}/sum"]),
            helper.make_node(
                "Split",
                [f"{tag}/sum", f"{tag}/split"],
                [u[1].output[0] for u in units],
                axis=-1,
            ),
        ]
        new_inits.append(numpy_helper.from_array(np.asarray(ns, np.int64), f"{tag}/split"))
        for u in units:
            drop.update(id(n) for n in u[:3])
        replace[id(add)] = nodes  # the first member's place: x and S exist there already
    if not fused:
        return 0
    kept: list[onnx.NodeProto] = []
    for node in graph.node:
        if id(node) in replace:
            kept.extend(replace[id(node)])
        elif id(node) not in drop:
            kept.append(node)
    read = {i for n in kept for i in n.input}
    del graph.node[:]
    graph.node.extend(_casts_first(kept))
    keep = [t for t in graph.initializer if t.name in read] + new_inits
    del graph.initializer[:]
    graph.initializer.extend(keep)
    _drop_dead_casts(graph)
    return fused


def _unit(node, inits, producer, consumers, cast_source):
    """(MatMulNBits, Add, correction MatMul, scale fp16 name, minima fp16 name) or None."""
    if node.op_type != "MatMulNBits" or node.domain != MS_DOMAIN or len(node.input) != 4:
        return None
    if node.input[1] not in inits or node.input[3] not in inits:
        return None
    if numpy_helper.to_array(inits[node.input[3]]).any():  # fused zero points are all 0
        return None
    scale = cast_source(node.input[2])
    users = consumers.get(node.output[0], [])
    if scale is None or len(users) != 1 or users[0].op_type != "Add":
        return None
    add = users[0]
    other = add.input[1] if add.input[0] == node.output[0] else add.input[0]
    corr = producer.get(other)
    if corr is None or corr.op_type != "MatMul" or len(consumers.get(other, [])) != 1:
        return None
    minima = cast_source(corr.input[1])
    if minima is None:
        return None
    return node, add, corr, scale, minima


def _attr(node: onnx.NodeProto, name: str) -> int:
    return next(a.i for a in node.attribute if a.name == name)


def _casts_first(nodes: list[onnx.NodeProto]) -> list[onnx.NodeProto]:
    """Initializer-only Casts first: keeps the list topological after the insertions."""
    casts = [n for n in nodes if n.op_type == "Cast" and n.input[0].endswith((".scale", ".min"))]
    ids = {id(n) for n in casts}
    return casts + [n for n in nodes if id(n) not in ids]


def _drop_dead_casts(graph: onnx.GraphProto) -> None:
    read = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    live = [n for n in graph.node if n.op_type != "Cast" or n.output[0] in read]
    if len(live) != len(graph.node):
        del graph.node[:]
        graph.node.extend(live)
        read = {i for n in live for i in n.input}
        keep = [t for t in graph.initializer if t.name in read]
        del graph.initializer[:]
        graph.initializer.extend(keep)
