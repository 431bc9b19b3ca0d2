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

Sparse residual: the entries with the largest |E_ab d_b|, E = W - TT(W D) D^-1, chosen by one
threshold across all layers on E_ab^2 d_b^2 / ||W D||_F^2 (the relative output error each
entry removes, all entries costing alike). They are stored as (flat index a * in + b, value
E_ab): the layer is then exact at those entries. An entry counts ENTRY_PARAMS parameters
(an fp32 value and an int32 index).

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
    """One compressed weight: W~ = tt.reconstruct() diag(1 / scale) + sparse (index, value)."""

    tt: TTMatrix
    scale: np.ndarray  # (in,) float32, d
    index: np.ndarray  # (n,) int64 ascending, a * in + b
    value: np.ndarray  # (n,) float32

    def dense(self) -> np.ndarray:
        w = self.tt.reconstruct() / self.scale[None, :]
        w.reshape(-1)[self.index] += self.value
        return w

    def num_params(self) -> int:
        return self.tt.num_params() + self.scale.size + ENTRY_PARAMS * self.index.size


def saten_layer(
    w: np.ndarray, scale: np.ndarray, rank: int, entries: int | None = None, threshold=None
) -> SatenLayer:
    """W (out, in) at TT rank `rank` on the grid weight_grid(out, in), fitted as W diag(scale),
    plus its `entries` largest weighted residual entries (or those whose relative square
    E_ab^2 d_b^2 / ||W D||_F^2 is >= threshold, the cross-layer rule of plan_saten)."""
    w = np.asarray(w, dtype=np.float64)
    d = np.asarray(scale, dtype=np.float64)
    if d.shape != (w.shape[1],) or not np.all(d > 0):
        raise ValueError(f"scale must be ({w.shape[1]},) and positive, got {d.shape}")
    of, if_ = weight_grid(*w.shape)
    u, s, vt = kron_svd(w * d, of, if_)
    return _layer(w, d, u, s, vt, rank, of, if_, entries, threshold)


def _layer(w, d, u, s, vt, rank, of, if_, entries, threshold) -> SatenLayer:
    tt = tt_of(u, s, vt, rank, of, if_)
    weighted = w * d - _unrearrange((u[:, :rank] * s[:rank]) @ vt[:rank], of, if_)  # E D
    rel = np.square(weighted).ravel() / max(float(np.square(s).sum()), 1e-300)
    if threshold is not None:
        index = np.flatnonzero(rel >= threshold) if threshold > 0 else np.flatnonzero(rel > 0)
    else:
        n = min(int(entries or 0), rel.size)
        index = np.sort(np.argpartition(-rel, n - 1)[:n]) if n else np.zeros(0, np.int64)
    value = (weighted.ravel()[index] / d[index % w.shape[1]]).astype(np.float32)
    return SatenLayer(tt, d.astype(np.float32), index.astype(np.int64), value)


@dataclass
class SatenPlan:
    ranks: list[int | None]  # None: the layer stays dense
    threshold: float  # entries with relative square >= threshold are kept
    share: float  # SPARSE_SHARES entry chosen
    entries: int  # total entries
    errors: dict[float, float]  # share -> summed relative error (inf: infeasible)


def _directions(s: np.ndarray, u: np.ndarray, vt: np.ndarray) -> Directions:
    # allocate_ranks reads basis.shape[0] as "in" and `out` as the other side of the cost
    return Directions(vt.T, np.square(s), u.shape[0])


def plan_saten(
    weights: list[np.ndarray],
    scales: list[np.ndarray],
    budget: int,
    step: int = STEP,
    progress=lambda items, what: items,
) -> tuple[SatenPlan, list[SatenLayer | None]]:
    """Ranks, entries and the compressed layers (None: dense) of `weights` (out, in) with
    `scales` d (in,), total parameters <= budget. Raises ValueError if no share fits.
    progress(iterable, description) wraps the slow loops (a progress bar)."""
    grids = [weight_grid(*w.shape) for w in weights]
    scales = [np.asarray(d, np.float64) for d in scales]
    svds = [
        kron_svd(np.asarray(w, np.float64) * d, *g, keep=useful_rank(*g))
        for w, d, g in zip(progress(weights, "TT-SVD of every weight"), scales, grids, strict=True)
    ]
    dirs = [_directions(s, u, vt) for u, s, vt in svds]
    errors: dict[float, float] = {}
    best: SatenPlan | None = None
    for share in progress(SPARSE_SHARES, "share of the budget for sparse entries"):
        try:
            ranks = allocate_ranks(dirs, int((1 - share) * budget) - sum(extra_of(weights)), step)
        except ValueError:
            errors[share] = math.inf
            continue
        used = sum(_cost(w, k, g) for w, k, g in zip(weights, ranks, grids, strict=True))
        n = max(0, (budget - used) // ENTRY_PARAMS)
        rels, dropped = [], 0.0
        for w, d, (u, s, vt), k, g in zip(weights, scales, svds, ranks, grids, strict=True):
            if k is None:
                continue
            total = max(float(np.square(s).sum()), 1e-300)
            dropped += float(np.square(s[k:]).sum()) / total
            recon = (u[:, :k] * s[:k].astype(np.float32)) @ vt[:k]
            res = _rearrange(np.asarray(w, np.float32) * d.astype(np.float32), *g) - recon
            rels.append((np.square(res) / np.float32(total)).ravel())
        allrel = np.concatenate(rels) if rels else np.zeros(0, np.float32)
        del rels
        n = min(n, allrel.size)
        threshold = float(np.partition(allrel, allrel.size - n)[allrel.size - n]) if n else np.inf
        captured = float(allrel[allrel >= threshold].sum(dtype=np.float64)) if n else 0.0
        del allrel
        errors[share] = dropped - captured
        if best is None or errors[share] < errors[best.share]:
            best = SatenPlan(ranks, threshold, share, n, errors)
    if best is None:
        raise ValueError(
            f"the budget ({budget} parameters) is below the smallest TT-matrix cores "
            f"(rank {step} in every layer that can be factored)"
        )
    layers: list[SatenLayer | None] = []
    for w, d, (u, s, vt), k, g in zip(weights, scales, svds, best.ranks, grids, strict=True):
        w64 = np.asarray(w, np.float64)
        layers.append(None if k is None else _layer(w64, d, u, s, vt, k, *g, None, best.threshold))
    # ties at the threshold (float32 squares) could pass the count: drop from the last layers
    over = sum(0 if x is None else x.index.size for x in layers) - best.entries
    for x in reversed(layers):
        if over <= 0:
            break
        if x is not None and x.index.size:
            cut = min(over, x.index.size)
            x.index, x.value = x.index[:-cut], x.value[:-cut]
            over -= cut
    best.entries = sum(0 if x is None else x.index.size for x in layers)
    return best, layers


def extra_of(weights: list[np.ndarray]) -> list[int]:
    """Parameters of each factored layer besides cores and entries: the 1 / d vector."""
    return [w.shape[1] for w in weights]


def _cost(w: np.ndarray, rank: int | None, grid) -> int:
    (o1, o2), (i1, i2) = grid
    return w.size if rank is None else rank * (o1 * i1 + o2 * i2) + w.shape[1]
