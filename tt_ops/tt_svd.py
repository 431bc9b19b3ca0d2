"""Batched TT-SVD: the Tensor-Train decomposition of many tensors at once.

Input: B tensors of the same shape (n_1, ..., n_d), given as rows x of a (B, N) array,
N = n_1 * ... * n_d, C-order (n_1 most significant). Output: cores G_k of shape
(B, r_{k-1}, n_k, r_k), r_0 = r_d = 1, such that for every row

    x[i_1, ..., i_d] ~= G_1[:, i_1, :] @ G_2[:, i_2, :] @ ... @ G_d[:, i_d, :].

This is Oseledets' TT-SVD (SIAM J. Sci. Comput. 33(5), 2011, Alg. 1) run on all rows together.
Step k unfolds the remainder C into a (B, m, M) stack, m = r_{k-1} n_k, M = n_{k+1}...n_d, and
keeps its top r_k singular vectors. The SVD of each small unfolding comes from the eigenvectors
of its Gram matrix on the smaller side (m x m or M x M), computed in float64: one batched
matmul plus one batched `eigh` of tiny matrices, which is much faster than B separate SVDs and
gives the same truncation.

Rank selection at step k (per row unless said otherwise):
  * fixed:   r_k = min(cap_k, m, M), the same for all rows (as TensorLy's `tensor_train`).
  * error-bounded, eps: drop the smallest singular values while their squared sum stays
    <= delta^2, delta = eps / sqrt(d-1) * ||x||; then ||x - TT(x)|| <= eps ||x|| (Oseledets,
    Thm 2.2). rank_mode says whose error is bounded:
      "row":       per-row ranks; every row meets eps with its own ranks.
      "every-row": one rank set, the largest per-row rank at each step; every row meets eps.
      "table":     one rank set for the table as a whole, delta = eps / sqrt(d-1) * ||X||_F;
                   ||X - TT(X)||_F <= eps ||X||_F (single rows may be worse).
    Caps still apply, so a cap can make the bound unreachable.
With per-row ranks, a row whose rank at bond k is below the stored (largest) rank has zeros in
the unused slices of its cores, so every row still contracts with the same shapes.

Singular values come from float64 Gram matrices, so they are resolved down to ~1e-8 of the
largest one: error targets below ~1e-7 may keep more rank than needed (the bound still holds).
Fixed-rank steps that truncate nothing skip the SVD (identity cores, see _exact_split).

"row" and fixed ranks need no information across rows, so rows are processed in chunks (small
peak memory, chunks in parallel threads: numpy releases the GIL in matmul and eigh). The two
table-wide modes process all chunks step by step and keep the whole remainder in float64.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

DEFAULT_CHUNK_ROWS = 4096


@dataclass
class _Chunk:
    """Working state of a block of rows during the sweep over modes."""

    rest: np.ndarray  # (B, R_{k-1}, n_k * ... * n_d) float64 remainder
    ranks: np.ndarray  # (B,) this row's rank at the current bond (<= R_{k-1})
    delta2: np.ndarray  # (B,) squared tolerance per step (0 when ranks are fixed)
    cores: list[np.ndarray]  # finished cores (B, R_{k-1}, n_k, R_k)
    row_ranks: list[np.ndarray]  # (B,) ranks r_0..r_k so far


def _gram_eigh(c: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """Singular values^2 (descending) and singular vectors of each matrix of a (B, m, M) stack.

    Returns (w, vecs, left): w (B, K), K = min(m, M); vecs (B, m, K) are left singular vectors
    when left is True (m <= M), else (B, M, K) right singular vectors.
    """
    left = c.shape[1] <= c.shape[2]
    ct = c.transpose(0, 2, 1)
    gram = c @ ct if left else ct @ c
    w, vecs = np.linalg.eigh(gram)  # ascending
    w = np.maximum(w[:, ::-1], 0.0)  # rounding can make tiny eigenvalues negative
    return w, vecs[:, :, ::-1], left


def _fix_signs(vecs: np.ndarray) -> np.ndarray:
    """Flip each (B, n, r) column so that its largest entry is positive.

    LAPACK's eigenvector signs can depend on the batch layout; fixed signs make the cores
    independent of chunking and threads (up to ties and repeated singular values).
    """
    big = np.take_along_axis(vecs, np.abs(vecs).argmax(axis=1)[:, None, :], axis=1)
    return vecs * np.where(big < 0, -1.0, 1.0)


def _tails(w: np.ndarray) -> np.ndarray:
    """tails[:, r] = sum_{i >= r} w[:, i], the squared error of keeping r singular values."""
    tails = np.zeros((w.shape[0], w.shape[1] + 1))
    tails[:, :-1] = np.cumsum(w[:, ::-1], axis=1)[:, ::-1]
    return tails


def _delta_ranks(tails: np.ndarray, delta2: np.ndarray) -> np.ndarray:
    """Smallest r >= 1 with tails[:, r] <= delta2 (always exists: tails[:, K] == 0)."""
    return 1 + np.argmax(tails[:, 1:] <= delta2[:, None], axis=1)


def _split(
    c: np.ndarray, vecs: np.ndarray, left: bool, ranks: np.ndarray, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """c (B, m, M) ~= core (B, m, width) @ rest (B, width, M), keeping ranks[b] columns of row b.

    The core has orthonormal columns (TT-SVD's left-orthogonal cores), the rest carries the
    singular values. Columns j >= ranks[b] are zero in both.
    """
    if left:
        core = _fix_signs(vecs[:, :, :width])  # U_r
        rest = core.transpose(0, 2, 1) @ c  # U_r^T C = S_r V_r^T
    else:
        v = _fix_signs(vecs[:, :, :width])  # V_r (B, M, width)
        core = c @ v  # U_r S_r
        # Normalise by the measured column norms (not sqrt(w)): core @ rest stays exactly
        # C V_r V_r^T even when a singular value is tiny or zero.
        s = np.linalg.norm(core, axis=1)  # (B, width)
        core /= np.where(s > 0, s, 1.0)[:, None, :]
        rest = s[:, :, None] * v.transpose(0, 2, 1)
    if (ranks < width).any():
        keep = np.arange(width)[None, :] < ranks[:, None]  # (B, width)
        core *= keep[:, None, :]
        rest *= keep[:, :, None]
    return core, rest


def _choose_ranks(
    tails: list[np.ndarray],
    chunks: list[_Chunk],
    cap: int,
    n_k: int,
    big_m: int,
    rank_mode: str,
    table_delta2: float,
) -> list[np.ndarray]:
    """Error-bounded rank of every row at this bond, one (B,) array per chunk."""
    if rank_mode == "table":
        total = sum(t.sum(axis=0) for t in tails)  # (K+1,) squared table error per rank
        r = min(int(1 + np.argmax(total[1:] <= table_delta2)), cap)
        return [np.full(len(ch.ranks), r) for ch in chunks]
    per_row = [
        # a row whose earlier ranks are smaller has fewer non-zero rows in its unfolding
        np.minimum(np.minimum(_delta_ranks(t, ch.delta2), cap), np.minimum(ch.ranks * n_k, big_m))
        for t, ch in zip(tails, chunks)
    ]
    if rank_mode == "every-row":
        r = max(int(p.max()) for p in per_row)
        return [np.full(len(p), r) for p in per_row]
    return per_row


def _mask_unused_rows(core: np.ndarray, prev_ranks: np.ndarray, n_k: int) -> None:
    """Zero core[b, a*n_k + i, :] for a >= prev_ranks[b]: those slices multiply zero columns of
    the previous core; zeroing them keeps the padding of per-row ranks exactly zero."""
    width_prev = core.shape[1] // n_k
    if (prev_ranks < width_prev).any():
        valid = np.arange(width_prev)[None, :] < prev_ranks[:, None]  # (B, R_{k-1})
        core *= np.repeat(valid, n_k, axis=1)[:, :, None]


def _exact_split(c: np.ndarray, r: int, exact_after: bool) -> tuple[np.ndarray, np.ndarray] | None:
    """Fixed-rank steps that truncate nothing need no SVD (the represented tensor is the same).

    r == m: identity core (orthonormal, so later truncations see the same singular values).
    r == M and no later step truncates: the core is C itself and the rest an identity.
    Returns None when the step must truncate.
    """
    b, m, big_m = c.shape
    if r == m:
        return np.broadcast_to(np.eye(m), (b, m, m)), c
    if r == big_m and exact_after:
        return c, np.broadcast_to(np.eye(big_m), (b, big_m, big_m))
    return None


def _sweep(
    chunks: list[_Chunk],
    mode_sizes: Sequence[int],
    caps: Sequence[int],
    rel_error: float | None,
    rank_mode: str,
    table_delta2: float,
) -> None:
    """Run the d-1 truncated SVD steps over all chunks together (in place)."""
    d = len(mode_sizes)
    right = [math.prod(mode_sizes[k + 1 :]) for k in range(d)]  # M_k = n_{k+1}...n_d
    for k in range(d - 1):
        n_k, big_m = mode_sizes[k], right[k]
        unfolded = [ch.rest.reshape(len(ch.ranks), -1, big_m) for ch in chunks]
        if rel_error is None:
            # later steps cannot truncate when every later cap reaches its right side
            exact_after = all(caps[j] >= right[j] for j in range(k + 1, d - 1))
            r = min(caps[k], unfolded[0].shape[1], big_m)
            splits = [_exact_split(c, r, exact_after) for c in unfolded]
            ranks = [np.full(len(ch.ranks), r) for ch in chunks]
            if splits[0] is None:
                splits = [_split(c, *_gram_eigh(c)[1:], rr, r) for c, rr in zip(unfolded, ranks)]
        else:
            eigs = [_gram_eigh(c) for c in unfolded]
            tails = [_tails(w) for w, _, _ in eigs]
            ranks = _choose_ranks(tails, chunks, caps[k], n_k, big_m, rank_mode, table_delta2)
            splits = [
                _split(c, vecs, left, r, int(r.max()))
                for c, (_, vecs, left), r in zip(unfolded, eigs, ranks)
            ]
        for ch, (core, rest), r in zip(chunks, splits, ranks):
            _mask_unused_rows(core, ch.ranks, n_k)
            ch.cores.append(core.reshape(len(r), -1, n_k, core.shape[2]))
            ch.rest, ch.ranks = rest, r
            ch.row_ranks.append(r)
    for ch in chunks:
        ch.cores.append(ch.rest.reshape(len(ch.ranks), -1, mode_sizes[-1], 1))
        ch.row_ranks.append(np.ones(len(ch.ranks), dtype=np.int64))


def _new_chunk(rows: np.ndarray, n: int, eps2_per_step: float) -> _Chunk:
    """Rows (B, D) zero-padded to (B, n) in float64 (padding per chunk: no padded table copy)."""
    b = rows.shape[0]
    if rows.dtype == np.float64 and rows.shape[1] == n:
        rest = rows  # no copy needed: the sweep never writes into its input
    else:
        rest = np.zeros((b, n))
        rest[:, : rows.shape[1]] = rows
    delta2 = eps2_per_step * np.einsum("ij,ij->i", rest, rest) if eps2_per_step else np.zeros(b)
    return _Chunk(
        rest=rest.reshape(b, 1, -1),
        ranks=np.ones(b, dtype=np.int64),
        delta2=delta2,
        cores=[],
        row_ranks=[np.ones(b, dtype=np.int64)],
    )


def _pad_to(core: np.ndarray, r_left: int, r_right: int) -> np.ndarray:
    """Zero-pad a (B, a, n, b) core to (B, r_left, n, r_right)."""
    _, a, _, b = core.shape
    if (a, b) == (r_left, r_right):
        return core
    return np.pad(core, ((0, 0), (0, r_left - a), (0, 0), (0, r_right - b)))


def batched_tt_svd(
    rows: np.ndarray,
    mode_sizes: Sequence[int],
    caps: Sequence[int],
    rel_error: float | None = None,
    rank_mode: str = "row",
    dtype: np.dtype | type = np.float32,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    threads: int | None = None,
) -> tuple[list[np.ndarray], np.ndarray]:
    """TT-SVD of every row of `rows` (B, D), zero-padded to N = prod(mode_sizes) >= D, C order.

    caps: d-1 rank caps (r_1..r_{d-1}); already validated and clipped to the structural ranks.
    Returns (cores, row_ranks): cores[k] (B, R_{k-1}, n_k, R_k) in `dtype` with R_k the largest
    rank of bond k over rows, and row_ranks (B, d+1) int64, each row's own ranks r_0..r_d.
    Arguments are trusted (the public entry points validate them).
    """
    d, n = len(mode_sizes), math.prod(mode_sizes)
    eps2 = 0.0 if rel_error is None or d == 1 else rel_error**2 / (d - 1)
    starts = range(0, rows.shape[0], chunk_rows)
    table_wide = rel_error is not None and rank_mode in ("table", "every-row")

    if table_wide:
        chunks = [_new_chunk(rows[s : s + chunk_rows], n, eps2) for s in starts]
        table_delta2 = float(sum(ch.delta2.sum() for ch in chunks))  # eps2 * ||X||_F^2
        _sweep(chunks, mode_sizes, caps, rel_error, rank_mode, table_delta2)
    else:

        def work(s: int) -> _Chunk:
            ch = _new_chunk(rows[s : s + chunk_rows], n, eps2)
            _sweep([ch], mode_sizes, caps, rel_error, rank_mode, 0.0)
            return ch

        n_threads = min(threads or os.cpu_count() or 1, len(starts))
        if n_threads > 1:
            with ThreadPoolExecutor(n_threads) as pool:
                chunks = list(pool.map(work, starts))
        else:
            chunks = [work(s) for s in starts]

    row_ranks = np.concatenate([np.stack(ch.row_ranks, axis=1) for ch in chunks])
    widths = row_ranks.max(axis=0)
    cores = [
        np.concatenate(
            [_pad_to(ch.cores[k], widths[k], widths[k + 1]).astype(dtype) for ch in chunks]
        )
        for k in range(d)
    ]
    return cores, row_ranks
