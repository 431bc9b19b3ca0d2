"""One MatMul per shared projection: merge equal initializers, then MatMuls on equal inputs.

A group of factored layers (export/linears/factored.py: q/k/v hold one projection A) is
traced by torch.onnx as one MatMul per layer, reading either its own transposed copy of A
(folded by torch.onnx, small models) or one Transpose node of the shared parameter (SmolLM2).
Here a Transpose of a 2-D initializer that only MatMuls read becomes a transposed initializer
(so the quantizers see a plain weight), initializers with the same dtype, dims and bytes become
one, and MatMul nodes reading the same two inputs become one (its output feeds every former
consumer): the file stores A once and the graph computes A x once per group.
"""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
from onnx import numpy_helper


def dedupe_matmuls(model: onnx.ModelProto) -> dict[str, int]:
    """Rewrite `model` in place; returns how many initializers and MatMuls were merged."""
    graph = model.graph
    transposes = _fold_transposed_weights(graph)
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
    return {"transposes": transposes, "initializers": len(alias), "matmuls": len(renamed)}


def _fold_transposed_weights(graph: onnx.GraphProto) -> int:
    """Transpose(W) -> an initializer holding W^T, where W is a 2-D initializer and only
    MatMuls read the result (as their weight). Returns how many were folded."""
    inits = {t.name: t for t in graph.initializer}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for i, name in enumerate(node.input):
            readers.setdefault(name, []).append(
                node if node.op_type == "MatMul" and i == 1 else None
            )
    folded, kept = [], []
    for node in graph.node:
        source = inits.get(node.input[0]) if node.op_type == "Transpose" else None
        perm = [list(a.ints) for a in node.attribute if a.name == "perm"]
        if (
            source is None
            or len(source.dims) != 2
            or perm not in ([], [[1, 0]])
            or not readers.get(node.output[0])
            or None in readers[node.output[0]]
        ):
            kept.append(node)
            continue
        w = np.ascontiguousarray(numpy_helper.to_array(source).T)
        folded.append(numpy_helper.from_array(w, node.output[0]))
    if folded:
        del graph.node[:]
        graph.node.extend(kept)
        read = {i for n in kept for i in n.input} | {o.name for o in graph.output}
        inits_kept = [t for t in graph.initializer if t.name in read]
        del graph.initializer[:]
        graph.initializer.extend(inits_kept + folded)
    return len(folded)
