"""The nodes a set of tensors depends on: the one graph walk the packed passes share."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import onnx


def nodes_feeding(nodes: Sequence[onnx.NodeProto], names: Iterable[str]) -> list[onnx.NodeProto]:
    """The nodes of `nodes` that `names` depend on, directly or through other nodes, in the
    order of `nodes` (so a topologically sorted list stays sorted)."""
    producer = {o: n for n in nodes for o in n.output}
    live, stack = set(), list(names)
    while stack:
        node = producer.get(stack.pop())
        if node is None or id(node) in live:
            continue
        live.add(id(node))
        stack.extend(node.input)
    return [n for n in nodes if id(n) in live]
