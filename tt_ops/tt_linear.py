"""A linear layer's weight as an order-2 TT-matrix plus a sparse residual (Saten, arXiv
2505.14871), numpy; the plan of a whole model under one parameter budget.

Grid (`weight_grid`): out = o_1 o_2, in = i_1 i_2; row a = a_1 o_2 + a_2, column
b = b_1 i_2 + b_2 (most significant digit first). The TT-matrix (MPO) with two cores is

    W[a, b] ~= sum_r G_1[0, a_1, b_1, r] G_2[r, a_2, b_2, 0]

(tt_matrix.py's TTMatrix with (vocab, dim) = (out, in)). With two cores TT-SVD is one SVD:
the rearrangement R[a_1 i_1 + b_1, a_2 i_2 + b_2] = W[a, b], shape (o_1 i_1, o_2 i_2) (the
Kronecker-product SVD), R = U diag(s) V^T, G_1 = U_r, G_2 = diag(s_r) V_r^T, and exactly

    ||W - TT_r(W)||_F^2 = sum_{j >= r} s_j^2,   rank r costs r (o_1 i_1 + o_2 i_2) parameters,

which is the shape rank_allocation.py's greedy works on (a "direction" per singular value, "in"
= o_2 i_2, "out" = o_1 i_1, dense = in * out): the cores' ranks of all layers come from the
same `allocate_ranks` as ESPACE's and SVD's.

Sensitivity: each weight is fitted as W D, D = diag(d), d_b the RMS of input b on calibration
text (sqrt of C_bb, C = E[x x^T] from the ESPACE statistics): ||(W - W~) D||_F^2 is the output
error E ||(W - W~) x||^2 with C's off-diagonal terms dropped. The layer then computes
TT(W D) (x / d): one Mul by 1 / d (in parameters) before the chain.

Sparse residual, row-structured (ELLPACK): every row a of a layer keeps its m largest weighted
residual entries |E_ab| d_b, E = W - TT(W D) D^-1, stored as (column b, value E_ab), so the
layer is exact there; the graph applies them per call with Gather + Mul + ReduceSum (no row
index, no scatter: export/linears/saten.py says why). m per layer: greedy across all layers by
the relative output error the next entry of every row removes (sum over rows of the m-th
largest E_ab^2 d_b^2, over ||W D||_F^2) per entry. An entry counts ENTRY_PARAMS parameters
(an fp32 value and an int32 column).

Split between cores and entries (`plan_saten`): for each share f in SPARSE_SHARES the cores get
(1 - f) of the budget, the entries what the cores leave; the share with the smallest summed
relative error (cores' dropped s_j^2 minus the entries' captured squares) is kept. The errors
of every share are returned, so the rule's choice is measured on every model it runs on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .rank_allocation import STEP, Directions, allocate_ranks
from .tt_matrix import TTMatrix

ENTRY_PARAMS = 2  # value + index
SPARSE_SHARES = (0.0, 0.125, 0.25, 0.375, 0.5)
BLOCK = 32  # q4's block: i_2 = 32 puts core 2's contraction axis on the block grid

__all__ = [
    "ENTRY_PARAMS",
    "SatenLayer",
    "SatenPlan",
    "kron_svd",
    "plan_saten",
    "saten_layer",
    "weight_grid",
]


def _divisors(n: int) -> list[int]:
    return [k for k in range(1, n + 1) if n % k == 0]


def weight_grid(out: int, in_dim: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """((o_1, o_2), (i_1, i_2)) for a weight (out, in).

    i_2 = 32 when 32 divides in (and in > 32), so that q4 can store both cores (their
    contraction axes are i_2 and i_1 r); else the divisor of in nearest sqrt(in). o_1 then
    makes R (o_1 i_1, o_2 i_2) as square as the divisors allow (rank up to min(.) with the
    fewest parameters per rank)."""
    if out < 1 or in_dim < 1:
        raise ValueError(f"weight shape must be positive, got ({out}, {in_dim})")
    if in_dim % BLOCK == 0 and in_dim > BLOCK:
        i2 = BLOCK
    else:
        i2 = min(_divisors(in_dim), key=lambda k: (abs(math.log(k) - math.log(in_dim) / 2), k))
    i1 = in_dim // i2
    o1 = min(_divisors(out), key=lambda k: (abs(math.log(k * i1) - math.log(out // k * i2)), k))
    return (o1, out // o1), (i1, i2)


def _rearrange(w: np.ndarray, of: tuple[int, int], if_: tuple[int, int]) -> np.ndarray:
    """W (out, in) -> R (o_1 i_1, o_2 i_2)."""
    (o1, o2), (i1, i2) = of, if_
    return w.reshape(o1, o2, i1, i2).transpose(0, 2, 1, 3).reshape(o1 * i1, o2 * i2)


def _unrearrange(r: np.ndarray, of: tuple[int, int], if_: tuple[int, int]) -> np.ndarray:
    """R (o_1 i_1, o_2 i_2) -> W (out, in)."""
    (o1, o2), (i1, i2) = of, if_
    return r.reshape(o1, i1, o2, i2).transpose(0, 2, 1, 3).reshape(o1 * o2, i1 * i2)


def kron_svd(w: np.ndarray, of: tuple[int, int], if_: tuple[int, int], keep: int | None = None):
    """(U (o_1 i_1, m), s (m,), V^T (m, o_2 i_2)) of the rearranged W: economy SVD in float32
    (s float64), only the first `keep` columns of U and rows of V^T when given (s whole: the
    allocation needs the total)."""
    w = np.asarray(w)
    if w.ndim != 2 or w.shape != (of[0] * of[1], if_[0] * if_[1]):
        raise ValueError(f"weight {w.shape} does not match the grid {of} x {if_}")
    u, s, vt = np.linalg.svd(_rearrange(w.astype(np.float32), of, if_), full_matrices=False)
    return u[:, :keep], s.astype(np.float64), vt[:keep]


def useful_rank(of: tuple[int, int], if_: tuple[int, int]) -> int:
    """The largest rank whose cores are smaller than the dense weight."""
    a, b = of[0] * if_[0], of[1] * if_[1]
    return max(0, (a * b - 1) // (a + b))


def tt_of(u: np.ndarray, s: np.ndarray, vt: np.ndarray, rank: int, of, if_) -> TTMatrix:
    """The rank-`rank` TT-matrix (cores float32) from kron_svd's factors."""
    (o1, o2), (i1, i2) = of, if_
    g1 = u[:, :rank].reshape(1, o1, i1, rank)
    g2 = (s[:rank, None] * vt[:rank]).reshape(rank, o2, i2, 1)
    cores = [np.asarray(g, dtype=np.float32) for g in (g1, g2)]
    return TTMatrix(cores, of, if_, o1 * o2, i1 * i2)


@dataclass
class SatenLayer:
    """One compressed weight: W~ = tt.reconstruct() diag(1 / scale) + S, S[a, cols[a, j]] =
    value[a, j] (every row keeps the same number m of entries: ELLPACK, no row index)."""

    tt: TTMatrix
    scale: np.ndarray  # (in,) float32, d
    cols: np.ndarray  # (out, m) int64, ascending per row
    value: np.ndarray  # (out, m) float32

    def dense(self) -> np.ndarray:
        w = self.tt.reconstruct() / self.scale[None, :]
        w[np.arange(w.shape[0])[:, None], self.cols] += self.value
        return w

    def num_params(self) -> int:
        return self.tt.num_params() + self.scale.size + ENTRY_PARAMS * self.cols.size


def saten_layer(w: np.ndarray, scale: np.ndarray, rank: int, per_row: int = 0) -> SatenLayer:
    """W (out, in) at TT rank `rank` on the grid weight_grid(out, in), fitted as W diag(scale),
    plus the `per_row` largest weighted residual entries |E_ab| d_b of every row."""
    w = np.asarray(w, dtype=np.float64)
    d = np.asarray(scale, dtype=np.float64)
    if d.shape != (w.shape[1],) or not np.all(d > 0):
        raise ValueError(f"scale must be ({w.shape[1]},) and positive, got {d.shape}")
    if not 0 <= per_row <= w.shape[1]:
        raise ValueError(f"per_row must be in [0, {w.shape[1]}], got {per_row}")
    of, if_ = weight_grid(*w.shape)
    u, s, vt = kron_svd(w * d, of, if_)
    return _layer(w, d, u, s, vt, rank, of, if_, per_row)


def _weighted_residual(w, d, u, s, vt, rank, of, if_) -> np.ndarray:
    """E D (out, in), float32."""
    recon = (u[:, :rank] * s[:rank].astype(np.float32)) @ vt[:rank]
    return (np.asarray(w, np.float32) * d.astype(np.float32)) - _unrearrange(recon, of, if_)


def _layer(w, d, u, s, vt, rank, of, if_, per_row: int) -> SatenLayer:
    tt = tt_of(u, s, vt, rank, of, if_)
    weighted = _weighted_residual(w, d, u, s, vt, rank, of, if_)
    if per_row:
        cols = np.sort(np.argpartition(-np.abs(weighted), per_row - 1, axis=1)[:, :per_row], 1)
    else:
        cols = np.zeros((w.shape[0], 0), np.int64)
    rows = np.arange(w.shape[0])[:, None]
    value = (weighted[rows, cols] / d[cols]).astype(np.float32)
    return SatenLayer(tt, d.astype(np.float32), cols.astype(np.int64), value)


@dataclass
class SatenPlan:
    ranks: list[int | None]  # None: the layer stays dense
    per_row: list[int]  # entries kept in every row of each layer
    share: float  # SPARSE_SHARES entry chosen
    entries: int  # total entries
    errors: dict[float, float]  # share -> summed relative error (inf: infeasible)


def _directions(s: np.ndarray, u: np.ndarray, vt: np.ndarray) -> Directions:
    # allocate_ranks reads basis.shape[0] as "in" and `out` as the other side of the cost
    return Directions(vt.T, np.square(s), u.shape[0])


def _entry_curve(weighted: np.ndarray, total: float) -> np.ndarray:
    """(in,): relative error removed by the m-th entry of every row (rows sorted by size)."""
    sq = np.square(weighted)
    sq.sort(axis=1)
    return sq[:, ::-1].sum(0, dtype=np.float64) / total


def _pick_entries(curves: list[np.ndarray | None], outs: list[int], n: int):
    """Entries per row of each layer, greedy by relative error removed per entry (each step
    adds `out` entries to a layer) within n entries; returns (per_row, captured)."""
    items = [
        (-g / out, i, m)
        for i, (g, out) in enumerate(zip(curves, outs, strict=True))
        if g is not None
        for m, g in enumerate(g)
    ]
    items.sort()
    per_row, used, captured = [0] * len(curves), 0, 0.0
    for neg, i, _ in items:
        if used + outs[i] > n:
            break
        per_row[i] += 1
        used += outs[i]
        captured -= neg * outs[i]
    return per_row, captured


def layer_svds(weights: list[np.ndarray], scales: list[np.ndarray], progress=None) -> list:
    """kron_svd of every W D on its grid, up to its useful rank (the slow part of a plan, the
    same for every budget: export/linears/saten.py caches it)."""
    progress = progress or (lambda items, what: items)
    out = []
    for w, d in zip(progress(weights, "TT-SVD of every weight"), scales, strict=True):
        g = weight_grid(*w.shape)
        out.append(kron_svd(np.asarray(w, np.float64) * d, *g, keep=useful_rank(*g)))
    return out


def plan_saten(
    weights: list[np.ndarray],
    scales: list[np.ndarray],
    budget: int,
    step: int = STEP,
    progress=lambda items, what: items,
    svds: list | None = None,
) -> tuple[SatenPlan, list[SatenLayer | None]]:
    """Ranks, entries per row and the compressed layers (None: dense) of `weights` (out, in)
    with `scales` d (in,), total parameters <= budget. Raises ValueError if no share fits.
    progress(iterable, description) wraps the slow loops (a progress bar); svds: layer_svds'
    result for these weights and scales, if already computed."""
    grids = [weight_grid(*w.shape) for w in weights]
    scales = [np.asarray(d, np.float64) for d in scales]
    svds = svds if svds is not None else layer_svds(weights, scales, progress)
    dirs = [_directions(s, u, vt) for u, s, vt in svds]
    outs = [w.shape[0] for w in weights]
    errors: dict[float, float] = {}
    best: SatenPlan | None = None
    for share in progress(SPARSE_SHARES, "share of the budget for sparse entries"):
        try:
            ranks = allocate_ranks(dirs, int((1 - share) * budget) - sum(extra_of(weights)), step)
        except ValueError:
            errors[share] = math.inf
            continue
        used = sum(_cost(w, k, g) for w, k, g in zip(weights, ranks, grids, strict=True))
        curves, dropped = [], 0.0
        for w, d, (u, s, vt), k, g in zip(weights, scales, svds, ranks, grids, strict=True):
            if k is None:
                curves.append(None)
                continue
            total = max(float(np.square(s).sum()), 1e-300)
            dropped += float(np.square(s[k:]).sum()) / total
            curves.append(_entry_curve(_weighted_residual(w, d, u, s, vt, k, *g), total))
        per_row, captured = _pick_entries(curves, outs, max(0, budget - used) // ENTRY_PARAMS)
        errors[share] = dropped - captured
        if best is None or errors[share] < errors[best.share]:
            entries = sum(m * o for m, o in zip(per_row, outs, strict=True))
            best = SatenPlan(ranks, per_row, share, entries, errors)
    if best is None:
        raise ValueError(
            f"the budget ({budget} parameters) is below the smallest TT-matrix cores "
            f"(rank {step} in every layer that can be factored)"
        )
    layers = [
        None if k is None else _layer(w, d, u, s, vt, k, *g, m)
        for w, d, (u, s, vt), k, g, m in zip(
            weights, scales, svds, best.ranks, grids, best.per_row, strict=True
        )
    ]
    return best, layers


def extra_of(weights: list[np.ndarray]) -> list[int]:
    """Parameters of each factored layer besides cores and entries: the 1 / d vector."""
    return [w.shape[1] for w in weights]


def _cost(w: np.ndarray, rank: int | None, grid) -> int:
    (o1, o2), (i1, i2) = grid
    return w.size if rank is None else rank * (o1 * i1 + o2 * i2) + w.shape[1]
