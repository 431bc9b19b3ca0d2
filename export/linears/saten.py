"""--linears saten: every linear layer's weight as TT-matrix cores plus a sparse residual
(Saten, arXiv 2505.14871; no public code, built from the paper's description).

    W~ = TT(W D) D^-1 + S      (math, allocation and the cores/entries split: tt_ops/tt_linear.py)

D = diag(d), d the per-input RMS on calibration text (the ESPACE statistics of export/
activation_stats.py, same cache): the cores fit the output error, not the weight's own
Frobenius norm. Ranks from rank_allocation.py's `allocate_ranks` (relative output error
removed per stored parameter, greedy across all layers); the entries per row of each layer by
the same kind of greedy; the share of the budget the entries get is the measured best of SPARSE_SHARES.

The graph (SatenLinear in saten_layer.py, traced by torch.onnx like any module):

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

from tensorgpt.export.linears import register
from tensorgpt.export.linears.base import LinearCompressor, budget_report

# rank step: core 1's contraction axis i_1 r is then whole q4 blocks whenever i_1 is even
# (SmolLM2: i_1 = 18 or 48); rank_allocation's 32 leaves no rank below dense for 64-wide layers
STEP = 16
SCALE_FLOOR = 0.01  # d >= 1% of the layer's mean d: a dead input must not blow up 1/d


@register
class Saten(LinearCompressor):
    name = "saten"
    help = "TT-matrix cores of each weight plus its largest residual entries (Saten)"
    order = 30
    shared = False

    def compress(self, adapter, tokenizer, spec, fingerprint, log) -> dict:
        import torch

        from tensorgpt.common.progress import track
        from tensorgpt.export.activation_stats import activation_eig
        from tensorgpt.export.linears.factored import input_groups
        from tensorgpt.export.linears.saten_layer import SatenLinear
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
            **budget_report(spec, STEP, original, stored, calibration),
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
