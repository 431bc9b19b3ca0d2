"""One MatMul per shared projection: merge equal initializers, then MatMuls on equal inputs.

A group of factored layers (export/linears/factored.py: q/k/v hold one projection A) is
traced by torch.onnx as one MatMul per layer, each with its own transposed copy of A as an
initializer. Here initializers with the same dtype, dims and bytes become one, and then MatMul
nodes reading the same two inputs become one (its output feeds every former consumer): the
file stores A once and the graph computes A x once per group.
"""

from __future__ import annotations

import hashlib

import onnx


def dedupe_matmuls(model: onnx.ModelProto) -> dict[str, int]:
    """Rewrite `model` in place; returns how many initializers and MatMuls were merged."""
    graph = model.graph
    # only MatMul weights are merged: other duplicates (shape constants) are not worth a pass
    weights = {n.input[1] for n in graph.node if n.op_type == "MatMul"}
    first: dict[tuple, str] = {}
    alias: dict[str, str] = {}
    for t in graph.initializer:
        if t.name not in weights or t.data_location == onnx.TensorProto.EXTERNAL:
            continue
        key = (t.data_type, tuple(t.dims), hashlib.sha256(t.raw_data).hexdigest())
        alias[t.name] = first.setdefault(key, t.name)
    alias = {k: v for k, v in alias.items() if k != v}
    seen: dict[tuple[str, str], str] = {}
    renamed: dict[str, str] = {}
    kept = []
    for node in graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = renamed.get(name, alias.get(name, name))
        if node.op_type == "MatMul" and node.input[1] in weights:
            key = (node.input[0], node.input[1])
            if key in seen:
                renamed[node.output[0]] = seen[key]
                continue
            seen[key] = node.output[0]
        kept.append(node)
    if alias or renamed:
        del graph.node[:]
        graph.node.extend(kept)
        inits = [t for t in graph.initializer if t.name not in alias]
        del graph.initializer[:]
        graph.initializer.extend(inits)
    return {"initializers": len(alias), "matmuls": len(renamed)}
