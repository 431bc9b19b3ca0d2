"""The torch side of a factored linear layer: y = B (A x), and which layers share an input.

    FactoredLinear   replaces one nn.Linear (out, in): `proj` A (k, in, no bias), then `out`
                     B (out, k) with the original bias. Layers of one group hold the same
                     `proj` module, so its weight is one parameter (one initializer in ONNX).
    input_groups     the body's nn.Linear layers grouped by the input tensor they read, found
                     by running the model once with pre-hooks (q/k/v read one tensor, gate/up
                     another), in call order.

torch.onnx writes each holder's `proj` call as its own MatMul on the same two inputs;
export/dedupe_matmuls.py then keeps one per group, so P^T x is computed once.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class FactoredLinear(nn.Module):
    """y = out(proj(x)); shapes x (..., in) -> (..., k) -> (..., out)."""

    def __init__(self, proj: nn.Linear, out: nn.Linear) -> None:
        super().__init__()
        self.proj = proj
        self.out = out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.proj(x))


def input_groups(model: nn.Module, body: nn.Module, probe_ids: torch.Tensor) -> list[list[str]]:
    """Names (relative to `body`) of its nn.Linear layers, grouped by shared input tensor.

    model: the whole causal LM, run once on probe_ids (1, n). A layer called more than once
    per forward (a shared module) is left out: factoring it would change every use."""
    calls: list[tuple[str, torch.Tensor]] = []
    hooks = []
    for name, module in body.named_modules():
        if type(module) is nn.Linear:
            hooks.append(
                module.register_forward_pre_hook(
                    lambda m, args, name=name: calls.append((name, args[0]))
                )
            )
    try:
        with torch.no_grad():
            model(probe_ids, use_cache=False)
    finally:
        for h in hooks:
            h.remove()
    counts: dict[str, int] = {}
    for name, _ in calls:
        counts[name] = counts.get(name, 0) + 1
    groups: list[list[str]] = []
    last = None
    for name, x in calls:
        if counts[name] != 1:
            continue
        if groups and x is last:
            groups[-1].append(name)
        else:
            groups.append([name])
        last = x
    return groups


def replace_group(body: nn.Module, names: list[str], a: np.ndarray, bs: list[np.ndarray]) -> None:
    """Replace the layers `names` of `body` by FactoredLinear sharing A (k, in); B_j (out_j, k)."""
    proj = nn.Linear(a.shape[1], a.shape[0], bias=False)
    proj.weight = nn.Parameter(torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)))
    for name, b in zip(names, bs, strict=True):
        old = body.get_submodule(name)
        out = nn.Linear(b.shape[1], b.shape[0], bias=old.bias is not None)
        out.weight = nn.Parameter(torch.from_numpy(np.ascontiguousarray(b, dtype=np.float32)))
        if old.bias is not None:
            out.bias = nn.Parameter(old.bias.detach().clone())
        parent, _, child = name.rpartition(".")
        setattr(body.get_submodule(parent) if parent else body, child, FactoredLinear(proj, out))
