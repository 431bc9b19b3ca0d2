"""Low-rank factors of linear layers under one parameter budget (numpy): ESPACE and SVD.

A group is a set of linear layers that read the same input x (in,): their weights stacked
W (out, in). Both methods replace y = W x by y = B (A x), A (k, in) and B (out, k), stored as
k (in + out) parameters instead of in * out, and both come down to an orthonormal basis
u_1..u_in of the input space with an exact, additive cost e_i of dropping direction u_i:

    espace   C = E[x x^T] = U diag(lam) U^T (calibration activations, `espace_directions`).
             With P = U_S (the kept eigenvectors), A = P^T, B = W P:
                 E ||W x - W P P^T x||^2 = sum over dropped i of lam_i ||W u_i||^2
             (the cross terms vanish because the u_i diagonalise C), so e_i = lam_i ||W u_i||^2
             and the kept directions are the ones with the largest e_i, not the largest lam_i
             (ESPACE's autocorrelation eigenvectors, ordered by the output error they save).
             B = W P is also the least-squares B for A = P^T: W C P (P^T C P)^-1 = W P when
             P's columns are eigenvectors of C.
    svd      W = U diag(s) V^T, A = V_k^T, B = U_k diag(s_k); e_i = s_i^2, the weight's own
             Frobenius error (`svd_directions`; no calibration: the baseline).

`allocate_ranks` spreads the budget: each group's errors are divided by its total (a
relative output error, comparable between groups whose outputs have different scales), and
ranks grow in steps of `step` directions (32: the 4-bit block, so B's contraction axis k stays
a whole number of blocks) greedily by relative error removed per stored parameter, across all
groups at once. A group whose factors would not be smaller than W stays dense; the step that
reaches that point makes it dense (all its error removed for in * out - k (in + out) more).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STEP = 32


@dataclass(frozen=True)
class Directions:
    """basis (in, m) float64, columns ordered by `errors` (m,), descending: the exact output
    error of dropping each direction (see the module docstring); out: the group's total rows."""

    basis: np.ndarray  # (in, m), m <= in directions
    errors: np.ndarray  # (m,)
    out: int

    @property
    def in_dim(self) -> int:
        return self.basis.shape[0]


def espace_directions(autocorr: np.ndarray, weight: np.ndarray) -> Directions:
    """autocorr C (in, in) = E[x x^T], weight W (out, in) -> eigenvectors of C ordered by
    lam_i ||W u_i||^2."""
    c = np.asarray(autocorr, dtype=np.float64)
    w = np.asarray(weight, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] != c.shape[1] or w.ndim != 2 or w.shape[1] != c.shape[0]:
        raise ValueError(f"autocorrelation {c.shape} does not match weight {w.shape} (out, in)")
    lam, u = np.linalg.eigh((c + c.T) / 2)
    return espace_directions_from_eig(lam, u, w)


def espace_directions_from_eig(
    lam: np.ndarray, u: np.ndarray, weight: np.ndarray, row_weight: np.ndarray | None = None
) -> Directions:
    """The same from C's eigenvalues (in,) and eigenvectors (in, in) (cached by the export).

    row_weight (out,): e_i = lam_i sum_r row_weight_r (W u_i)_r^2 / 2 instead, the loss-scale
    error of `espace-fisher` (C loss-weighted, each layer's rows by its share of the group's
    output gradients: export/activation_stats.py): still exact and additive, since the u_i
    diagonalise that C."""
    w = np.asarray(weight, dtype=np.float64)
    u = np.asarray(u, dtype=np.float64)
    if u.shape != (w.shape[1], w.shape[1]) or lam.shape != (w.shape[1],):
        raise ValueError(f"eigenpairs {lam.shape}, {u.shape} do not match weight {w.shape}")
    lam = np.clip(np.asarray(lam, dtype=np.float64), 0.0, None)  # C is PSD; rounding
    if row_weight is None:
        errors = lam * np.square(w @ u).sum(0)
    else:
        rows = np.asarray(row_weight, dtype=np.float64)
        if rows.shape != (w.shape[0],):
            raise ValueError(f"row_weight {rows.shape} does not match weight {w.shape}")
        errors = lam * (rows[:, None] * np.square(w @ u)).sum(0) / 2
    order = np.argsort(-errors, kind="stable")
    return Directions(u[:, order], errors[order], w.shape[0])


def svd_directions(weight: np.ndarray) -> Directions:
    """weight W (out, in) -> Directions over V's columns with e_i = s_i^2 (economy SVD:
    min(out, in) directions; a rank that saves parameters is always below that)."""
    w = np.asarray(weight, dtype=np.float64)
    _, s, vt = np.linalg.svd(w, full_matrices=False)
    return Directions(vt.T, s**2, w.shape[0])


def factor_params(rank: int, in_dim: int, out: int) -> int:
    return rank * (in_dim + out)


def allocate_ranks(
    groups: list[Directions], budget: int, step: int = STEP, relative: bool = True
) -> list[int | None]:
    """Rank per group (None: dense) with total stored parameters <= budget.

    relative: divide each group's errors by its total (a relative output error); False when
    the errors are already on one scale across groups (espace-fisher's loss per position), so
    the greedy step compares estimated loss increase per stored parameter directly.

    Every group that can save parameters starts at rank `step`; then the greedy rule of the
    module docstring. Raises ValueError if even those starting ranks exceed the budget."""
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    ranks: list[int | None] = []
    rel: list[np.ndarray] = []
    for g in groups:
        total = float(g.errors.sum()) if relative else 1.0
        rel.append(g.errors / total if total > 0 else np.zeros_like(g.errors))
        saves = factor_params(step, g.in_dim, g.out) < g.in_dim * g.out
        ranks.append(step if saves and step < g.in_dim else None)
    used = sum(_cost(r, g) for r, g in zip(ranks, groups, strict=True))
    if used > budget:
        raise ValueError(
            f"the budget ({budget} parameters) is below the smallest factorization "
            f"({used} parameters at rank {step} in every group that can be factored)"
        )
    open_groups = {i for i, r in enumerate(ranks) if r is not None}
    while open_groups:
        best, best_gain = None, -1.0
        for i in sorted(open_groups):
            extra, gain = _next_move(ranks[i], groups[i], rel[i], step)
            if used + extra > budget:
                continue
            if gain / extra > best_gain:
                best, best_gain = i, gain / extra
        if best is None:
            break
        extra, _ = _next_move(ranks[best], groups[best], rel[best], step)
        used += extra
        k = ranks[best] + step
        if factor_params(k, groups[best].in_dim, groups[best].out) >= _dense(groups[best]):
            ranks[best] = None  # dense: no longer a candidate
            open_groups.discard(best)
        else:
            ranks[best] = k
    return ranks


def _dense(g: Directions) -> int:
    return g.in_dim * g.out


def _cost(rank: int | None, g: Directions) -> int:
    return _dense(g) if rank is None else factor_params(rank, g.in_dim, g.out)


def _next_move(rank: int, g: Directions, rel: np.ndarray, step: int) -> tuple[int, float]:
    """(extra parameters, relative error removed) of growing `rank` by one step (to dense if
    that step no longer saves parameters)."""
    k = rank + step
    if k >= g.in_dim or factor_params(k, g.in_dim, g.out) >= _dense(g):
        return _dense(g) - factor_params(rank, g.in_dim, g.out), float(rel[rank:].sum())
    return step * (g.in_dim + g.out), float(rel[rank:k].sum())
