"""The torch side of a --linears saten layer (export/linears/saten.py says what it computes
and why): its own file because the registry imports every mode's module and must not import
torch (the runtime CLI never does; tests/runtime_demo/test_no_torch.py)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class SatenLinear(nn.Module):
    """y = TT-chain(x / d) + row entries(x) + bias; x (..., in) -> (..., out)."""

    def __init__(self, layer, bias: torch.Tensor | None) -> None:
        super().__init__()
        (o1, o2), (i1, i2) = layer.tt.vocab_factors, layer.tt.dim_factors
        r = layer.tt.ranks[1]
        g1, g2 = layer.tt.cores
        self.shape = (o1, o2, i1, i2, r)
        self.out_features, self.in_features = o1 * o2, i1 * i2
        # C_1[b_1 r + k, a_1] = G_1[0, a_1, b_1, k]; C_2[b_2, k o_2 + a_2] = G_2[k, a_2, b_2, 0]
        c1 = g1[0].transpose(1, 2, 0).reshape(i1 * r, o1)
        c2 = g2[..., 0].transpose(2, 0, 1).reshape(i2, r * o2)
        self.core1 = nn.Parameter(torch.from_numpy(np.ascontiguousarray(c1, np.float32)))
        self.core2 = nn.Parameter(torch.from_numpy(np.ascontiguousarray(c2, np.float32)))
        self.inv_scale = nn.Parameter(torch.from_numpy((1.0 / layer.scale).astype(np.float32)))
        self.value = nn.Parameter(torch.from_numpy(layer.value.astype(np.float32)))
        self.per_row = layer.cols.shape[1]
        # flat: x[:, cols] with a 2-D index traces as Transpose + GatherND + Transpose
        self.register_buffer("cols", torch.from_numpy(layer.cols.reshape(-1).astype(np.int32)))
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())
        # healing (export/linears/heal.py) trains on W~ rebuilt once per step: the chain
        # below costs ~13x the dense layer's multiply-adds per token at SmolLM2's ranks
        self.dense_forward = False

    def dense_weight(self) -> torch.Tensor:
        """W~ (out, in) from the current parameters (the same function as forward)."""
        o1, o2, i1, i2, r = self.shape
        a, b = self.core1.reshape(i1, r, o1), self.core2.reshape(i2, r, o2)
        w = torch.einsum("xkp,ykq->pqxy", a, b).reshape(o1 * o2, i1 * i2) * self.inv_scale
        rows = torch.arange(o1 * o2).repeat_interleave(self.per_row)
        return w.index_put((rows, self.cols.long()), self.value.reshape(-1), accumulate=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dense_forward:
            return nn.functional.linear(x, self.dense_weight(), self.bias)
        o1, o2, i1, i2, r = self.shape
        lead = x.shape[:-1]
        t = (x * self.inv_scale).reshape(-1, i2) @ self.core2  # (N i_1, r o_2)
        t = t.reshape(-1, i1, r, o2).permute(0, 3, 1, 2).reshape(-1, i1 * r)
        t = (t @ self.core1).reshape(-1, o2, o1).transpose(1, 2)  # (N, o_1, o_2)
        y = t.reshape(*lead, self.out_features)
        if self.per_row:
            picked = x.reshape(-1, self.in_features).index_select(1, self.cols.long())
            picked = picked.reshape(-1, self.out_features, self.per_row)  # (N, out, m)
            y = y + (picked * self.value).sum(-1).reshape(*lead, self.out_features)
        return y if self.bias is None else y + self.bias
