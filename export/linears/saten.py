"""--linears saten: every linear layer's weight as TT-matrix cores plus a sparse residual
(Saten, arXiv 2505.14871; no public code, built from the paper's description).

    W~ = TT(W D) D^-1 + S      (math, allocation and the cores/entries split: tt_ops/tt_linear.py)

D = diag(d), d the per-input RMS on calibration text (the ESPACE statistics of export/
activation_stats.py, same cache): the cores fit the output error, not the weight's own
Frobenius norm. Ranks from rank_allocation.py's `allocate_ranks` (relative output error
removed per stored parameter, greedy across all layers); the entries per row of each layer by
the same kind of greedy; the share of the budget the entries get is the measured best of SPARSE_SHARES.

The graph (SatenLinear, traced by torch.onnx like any module):

    t = (x * 1/d).reshape(N i_1, i_2) @ C_2          C_2 (i_2, r o_2)      core 2
    t = t.reshape(N, i_1, r, o_2).transpose -> (N o_2, i_1 r) @ C_1   C_1 (i_1 r, o_1)  core 1
    y = t.reshape(N, o_2, o_1).transpose -> (N, out) + residual + bias

Residual in standard ops, per call: every row keeps m entries (tt_ops/tt_linear.py), so
y += ReduceSum(Gather(x, cols (out, m)) * value (out, m)) over m: no row index and no
scatter. Tried first (commit "--linears saten: order-2 TT-matrix cores + unstructured sparse
residual"): unstructured entries densified at load (ScatterElements into zeros, then x @ S)
are constant-folded by torch.onnx's optimizer already at export whenever S is below its size
limits (inputs <= 8192, output <= 262144 elements: every layer of the tiny test model), so the
file then held the dense S and q4 re-rounded it (parity failed); ScatterElements-add per call
ran 46x slower than the dense layer for one token on 1 thread (benchmarks/saten_residual.py
at that commit). Row entries per call: 31x (onnxruntime's Gather, about 25 ns per index).

--quantize q4: C_1 and C_2 are MatMul weights whose contraction axes (i_1 r and i_2 = 32)
are whole 4-bit blocks, so q4 stores them like any weight (weight_grid puts i_2 on the block);
the entries' values stay fp32, their columns int32, 1/d fp32.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from tensorgpt.export.linears import register
from tensorgpt.export.linears.base import LinearCompressor

# rank step: core 1's contraction axis i_1 r is then whole q4 blocks whenever i_1 is even
# (SmolLM2: i_1 = 18 or 48); rank_allocation's 32 leaves no rank below dense for 64-wide layers
STEP = 16
SCALE_FLOOR = 0.01  # d >= 1% of the layer's mean d: a dead input must not blow up 1/d


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

    def dense_weight(self) -> torch.Tensor:
        """W~ (out, in) from the current parameters (the same function as forward)."""
        o1, o2, i1, i2, r = self.shape
        a, b = self.core1.reshape(i1, r, o1), self.core2.reshape(i2, r, o2)
        w = torch.einsum("xkp,ykq->pqxy", a, b).reshape(o1 * o2, i1 * i2) * self.inv_scale
        rows = torch.arange(o1 * o2).repeat_interleave(self.per_row)
        return w.index_put((rows, self.cols.long()), self.value.reshape(-1), accumulate=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
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


@register
class Saten(LinearCompressor):
    name = "saten"
    help = "TT-matrix cores of each weight plus its largest residual entries (Saten)"
    order = 30
    shared = False

    def compress(self, adapter, tokenizer, spec, fingerprint, log) -> dict:
        from tensorgpt.common.progress import track
        from tensorgpt.export.activation_stats import activation_eig
        from tensorgpt.export.linears.factored import input_groups
        from tensorgpt.tt_ops.tt_linear import SPARSE_SHARES, plan_saten

        body = adapter.decoder_body()
        vocab = adapter.shape().vocab_size
        groups = input_groups(adapter.model, body, (torch.arange(8) * 7919 % vocab)[None])
        if not groups:
            raise ValueError(
                f"--linears saten: {type(adapter.model).__name__} has no nn.Linear layers in "
                "its body (GPT-2's Conv1D layers are not supported yet)"
            )
        # the same layers and cache entry as --linears espace: one C per shared input
        eigs, calibration = activation_eig(
            adapter, tokenizer, [g[0] for g in groups], spec.calib_text, fingerprint
        )
        names, weights, scales = [], [], []
        for group, (lam, u) in zip(groups, eigs, strict=True):
            diag = np.square(u.astype(np.float64)) @ np.clip(lam.astype(np.float64), 0, None)
            d = np.sqrt(diag)
            d = np.maximum(d, SCALE_FLOOR * d.mean())
            for name in group:
                names.append(name)
                weights.append(body.get_submodule(name).weight.detach().float().numpy())
                scales.append(d)
        original = sum(w.size for w in weights)

        def progress(items, what):
            return track(items, f"[export] saten: {what}", unit="step")

        svds = _cached_svds(weights, scales, fingerprint, names, progress)
        budget = int(spec.ratio * original)
        plan, layers = plan_saten(weights, scales, budget, STEP, progress, svds)
        stored, rows = 0, []
        for name, w, layer, k in zip(names, weights, layers, plan.ranks, strict=True):
            if layer is None:
                stored += w.size
            else:
                old = body.get_submodule(name)
                parent, _, child = name.rpartition(".")
                holder = body.get_submodule(parent) if parent else body
                setattr(holder, child, SatenLinear(layer, old.bias))
                stored += layer.num_params()
            rows.append(
                {
                    "layers": [name],
                    "in": w.shape[1],
                    "out": w.shape[0],
                    "rank": k,
                    "grid": None
                    if layer is None
                    else [layer.tt.vocab_factors, layer.tt.dim_factors],
                    "per_row": 0 if layer is None else int(layer.cols.shape[1]),
                }
            )
        log(
            f"saten: {sum(k is not None for k in plan.ranks)} of {len(names)} layers as cores + "
            f"{plan.entries} entries (sparse share {plan.share:g} of the budget, the best of "
            f"{list(SPARSE_SHARES)}), linear weights {stored / 1e6:.2f}M of "
            f"{original / 1e6:.2f}M parameters ({stored / original:.3f})"
        )
        return {
            **spec.options(),
            "step": STEP,
            "original_params": int(original),
            "stored_params": int(stored),
            "stored_ratio": round(stored / original, 6),
            "calibration": calibration,
            "residual": "rows",
            "sparse_share": plan.share,
            "entries": int(plan.entries),
            "share_errors": {
                f"{s:g}": (None if e == float("inf") else e) for s, e in plan.errors.items()
            },
            "groups": rows,
        }


def _cached_svds(weights, scales, fingerprint: str, names: list[str], progress) -> list:
    """layer_svds, cached like the ESPACE statistics (export/calibration.py): minutes of SVDs
    for SmolLM2 on 2 cores, the same for every --linear-ratio. Keyed by the model, the layers
    and the scales (which carry the calibration)."""
    import hashlib

    from tensorgpt.export.calibration import cached_arrays, default_cache_dir
    from tensorgpt.tt_ops.tt_linear import layer_svds

    digest = hashlib.sha256()
    for d in scales:
        digest.update(np.ascontiguousarray(d, np.float64).tobytes())
    settings = {"model": fingerprint, "layers": names, "scales_sha256": digest.hexdigest()}

    def make() -> dict[str, np.ndarray]:
        arrays = {}
        for i, (u, s, vt) in enumerate(layer_svds(weights, scales, progress)):
            arrays[f"u{i}"], arrays[f"s{i}"], arrays[f"vt{i}"] = u, s, vt
        return arrays

    arrays = cached_arrays(default_cache_dir(), "saten-svd", settings, make)
    return [(arrays[f"u{i}"], arrays[f"s{i}"], arrays[f"vt{i}"]) for i in range(len(weights))]
