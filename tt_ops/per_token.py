"""Per-token Tensor-Train (TensorGPT, arXiv 2307.00526): every embedding row is its own MPS.

A row x of D numbers is zero-padded to N = n_1 * ... * n_d >= D (the paper: n_k = 2, N the
next power of two) and viewed as an order-d tensor, C order (n_1 most significant):

    x_pad[i_1 * (n_2...n_d) + ... + i_d] = X[i_1, ..., i_d] ~= G_1[i_1] G_2[i_2] ... G_d[i_d]

with G_k[i_k] an r_{k-1} x r_k matrix, r_0 = r_d = 1. The table keeps, for each bond, one core
array for all V rows: core k has shape (V, r_{k-1}, n_k, r_k).

Reconstruction (the ONNX graph does exactly this, per token t):

    x = cores[0][t].reshape(n_1, r_1)                               # (n_1, r_1)
    for k in 2..d:  x = (x @ cores[k-1][t].reshape(r_{k-1}, n_k * r_k)).reshape(-1, r_k)
    row = x.reshape(N)[:D]                                          # (n_1...n_k, r_k) at step k

Parameters per token: sum_k r_{k-1} n_k r_k (20 / 72 / 232 / 680 for D = 768 at rank caps
1 / 2 / 4 / 8, the paper's 38.40x / 10.67x / 3.31x / 1.13x).

A TT is defined up to invertible matrices between cores (gauge). The batched path gives a bond
that is not truncated an identity core, where TensorLy gives some orthogonal matrix: the same
tensor and errors, other core values. At D = 768, rank 4, cores 1, 2, 9 and 10 come out equal
for every token (40 of the 232 parameters per token are constants; the paper counts them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .shapes import check_mode_sizes, max_ranks, paper_mode_sizes
from .tt_svd import DEFAULT_CHUNK_ROWS, batched_tt_svd
from .validation import (
    RANK_MODES,
    check_choice,
    check_positive_int,
    check_rank_caps,
    check_rel_error,
    check_table,
)

DEFAULT_RANK = 4  # the paper's rank cap that "matches GPT-2" (3.31x at D = 768)
METHODS = ("batched", "tensorly")


def check_indices(rows: np.ndarray | Sequence[int], size: int, name: str = "rows") -> np.ndarray:
    """A 1-D int64 array of row indices in [0, size)."""
    idx = np.asarray(rows)
    if idx.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of row indices, got shape {idx.shape}")
    if idx.size and not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"{name} must hold integers, got dtype {idx.dtype}")
    idx = idx.astype(np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= size):
        raise ValueError(f"{name} must be in [0, {size}), got values in [{idx.min()}, {idx.max()}]")
    return idx


@dataclass
class PerTokenTT:
    """Per-token TT cores of a V x D table.

    cores[k]: (V, R_{k-1}, n_k, R_k), R_0 = R_d = 1. With per-row error-bounded ranks, R_k is
        the largest rank of bond k; row t's cores are zero outside [:r_{k-1}(t), :, :r_k(t)].
    mode_sizes: (n_1, ..., n_d); dim: D <= prod(n_k), reconstruction keeps the first D entries.
    row_ranks: optional (V, d+1) int array of each row's own ranks r_0..r_d (None: all rows
        use `ranks`).
    rank_caps, rel_error, rank_mode: the settings that made the cores, reused by append_rows.
    """

    cores: list[np.ndarray]
    mode_sizes: tuple[int, ...]
    dim: int
    row_ranks: np.ndarray | None = None
    rank_caps: tuple[int, ...] | None = None
    rel_error: float | None = None
    rank_mode: str = "row"

    def __post_init__(self) -> None:
        # Checked here because cores may come from a file (load_compressed).
        self.mode_sizes = tuple(int(n) for n in self.mode_sizes)
        self.dim = check_positive_int(self.dim, "dim")
        check_mode_sizes(self.mode_sizes, self.dim)
        if len(self.cores) != len(self.mode_sizes):
            raise ValueError(
                f"cores: expected {len(self.mode_sizes)} cores for mode_sizes "
                f"{list(self.mode_sizes)}, got {len(self.cores)}"
            )
        v, r_prev = self.cores[0].shape[0], 1
        for k, (core, n_k) in enumerate(zip(self.cores, self.mode_sizes)):
            if core.ndim != 4 or core.shape[:3] != (v, r_prev, n_k):
                raise ValueError(
                    f"cores[{k}] must have shape ({v}, {r_prev}, {n_k}, r_{k + 1}), got {core.shape}"
                )
            r_prev = core.shape[3]
        if r_prev != 1:
            raise ValueError(f"cores[-1] must end with rank 1, got {self.cores[-1].shape}")
        if self.row_ranks is not None:
            self.row_ranks = np.asarray(self.row_ranks, dtype=np.int64)
            if self.row_ranks.shape != (v, len(self.cores) + 1):
                raise ValueError(
                    f"row_ranks must have shape ({v}, {len(self.cores) + 1}), "
                    f"got {self.row_ranks.shape}"
                )
            if (self.row_ranks < 1).any() or (self.row_ranks > np.array(self.ranks)).any():
                raise ValueError("row_ranks must lie between 1 and the stored ranks of each bond")

    @property
    def vocab_size(self) -> int:
        return int(self.cores[0].shape[0])

    @property
    def ranks(self) -> tuple[int, ...]:
        """Stored bond dimensions (R_0, ..., R_d), R_0 = R_d = 1."""
        return tuple(int(c.shape[1]) for c in self.cores) + (1,)

    @property
    def padded_dim(self) -> int:
        return math.prod(self.mode_sizes)

    @property
    def dtype(self) -> np.dtype:
        return self.cores[0].dtype

    def reconstruct(
        self, rows: np.ndarray | Sequence[int] | None = None, chunk_rows: int = 8192
    ) -> np.ndarray:
        """Rows `rows` (default: all) as a (len(rows), D) array, float32 (float64 cores: float64).

        float16 cores are widened before the products (numpy's float16 matmul is slow and
        accumulates in float16).
        """
        idx = np.arange(self.vocab_size) if rows is None else check_indices(rows, self.vocab_size)
        dtype = np.result_type(self.dtype, np.float32)
        out = np.empty((len(idx), self.dim), dtype=dtype)
        for s in range(0, len(idx), chunk_rows):
            take = idx[s : s + chunk_rows]
            b = len(take)
            first = self.cores[0][take].astype(dtype, copy=False)  # (b, 1, n_1, r_1)
            x = first.reshape(b, first.shape[2], first.shape[3])  # (b, n_1, r_1)
            for core in self.cores[1:]:
                g = core[take].astype(dtype, copy=False)  # (b, r_{k-1}, n_k, r_k)
                x = (x @ g.reshape(b, g.shape[1], -1)).reshape(b, -1, g.shape[3])
            out[s : s + b] = x.reshape(b, -1)[:, : self.dim]
        return out

    def row_param_counts(self) -> np.ndarray:
        """(V,) parameters of each row's own cores: sum_k r_{k-1}(t) n_k r_k(t)."""
        rr = self.row_ranks if self.row_ranks is not None else np.array([self.ranks])
        n = np.array(self.mode_sizes)
        counts = (rr[:, :-1] * n * rr[:, 1:]).sum(axis=1)
        return np.broadcast_to(counts, (self.vocab_size,))

    def num_params(self) -> int:
        """Parameters of the decomposition: sum over rows of their own core sizes.

        With per-row ranks this excludes the zero padding of the stored arrays (see nbytes).
        """
        return int(self.row_param_counts().sum())

    def nbytes(self, dtype: np.dtype | str | None = None) -> int:
        """Bytes of the stored core arrays (padding included) in `dtype` (default: their own)."""
        itemsize = np.dtype(dtype or self.dtype).itemsize
        return int(sum(c.size for c in self.cores)) * itemsize

    def append_rows(self, new_table: np.ndarray) -> PerTokenTT:
        """A new PerTokenTT with the rows of `new_table` (V', D) decomposed alone and appended.

        The existing rows' core values are copied bit for bit (new_table has no influence on
        them); if a new row needs a wider bond, all stored cores are zero-padded on that bond.
        """
        new_table = check_table(new_table, "new_table")
        if new_table.shape[1] != self.dim:
            raise ValueError(
                f"new_table must have {self.dim} columns like the table, got {new_table.shape[1]}"
            )
        rank = self.rank_caps
        if rank is None and self.rel_error is None:  # hand-made cores: keep their ranks
            rank = list(self.ranks[1:-1])
        new = decompose_per_token(
            new_table,
            rank=rank,
            mode_sizes=self.mode_sizes,
            rel_error=self.rel_error,
            rank_mode=self.rank_mode,
        )
        old_rr = _full_row_ranks(self)
        new_rr = _full_row_ranks(new)
        widths = np.maximum(old_rr.max(axis=0), new_rr.max(axis=0))
        cores = []
        for k, (a, b) in enumerate(zip(self.cores, new.cores)):
            shape = (widths[k], self.mode_sizes[k], widths[k + 1])
            merged = np.zeros((a.shape[0] + b.shape[0], *shape), dtype=self.dtype)
            merged[: a.shape[0], : a.shape[1], :, : a.shape[3]] = a
            merged[a.shape[0] :, : b.shape[1], :, : b.shape[3]] = b
            cores.append(merged)
        row_ranks = np.concatenate([old_rr, new_rr])
        uniform = (row_ranks == widths).all()
        return PerTokenTT(
            cores=cores,
            mode_sizes=self.mode_sizes,
            dim=self.dim,
            row_ranks=None if uniform else row_ranks,
            rank_caps=self.rank_caps,
            rel_error=self.rel_error,
            rank_mode=self.rank_mode,
        )


def _full_row_ranks(tt: PerTokenTT) -> np.ndarray:
    if tt.row_ranks is not None:
        return tt.row_ranks
    return np.tile(np.array(tt.ranks, dtype=np.int64), (tt.vocab_size, 1))


def _tensorly_cores(
    table: np.ndarray, mode_sizes: tuple[int, ...], caps: tuple[int, ...]
) -> list[np.ndarray]:
    """Reference path: tensorly.decomposition.tensor_train on each padded row (slow loop)."""
    import tensorly as tl
    from tensorly.decomposition import tensor_train

    n = math.prod(mode_sizes)
    if len(mode_sizes) == 1:  # TensorLy cannot split an order-1 tensor; its TT is the row itself
        padded = np.zeros((len(table), n))
        padded[:, : table.shape[1]] = table
        return [padded.reshape(len(table), 1, n, 1)]
    per_row = []
    with tl.backend_context("numpy"):
        for row in table:
            x = np.zeros(n)
            x[: row.size] = row
            per_row.append(tensor_train(x.reshape(mode_sizes), rank=[1, *caps, 1]).factors)
    return [np.stack([f[k] for f in per_row]) for k in range(len(mode_sizes))]


def decompose_per_token(
    table: np.ndarray,
    rank: int | Sequence[int] | None = None,
    mode_sizes: Sequence[int] | None = None,
    rel_error: float | None = None,
    rank_mode: str = "row",
    method: str = "batched",
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    threads: int | None = None,
) -> PerTokenTT:
    """TT-SVD of every row of `table` (V, D) as an order-d tensor of `mode_sizes`.

    rank: one cap for every bond or d-1 per-bond caps. Default: 4 (the paper's setting) for
        fixed ranks; no cap when rel_error is given (pass a cap to bound both).
    mode_sizes: n_1..n_d with prod >= D (rows are zero-padded); default: the paper's 2s,
        padded to the next power of two (768 -> 1024 = 2^10).
    rel_error: eps; truncate each step at delta = eps / sqrt(d-1) * ||row|| (Oseledets) so that
        ||row - TT(row)|| <= eps ||row||. rank_mode: "row" (per-row ranks), "every-row" (one
        rank set, every row meets eps), "table" (one rank set, ||X - TT(X)||_F <= eps ||X||_F).
    method: "batched" (all rows at once, Gram-eigh SVDs in float64) or "tensorly" (the
        reference: tensorly.decomposition.tensor_train per row; fixed ranks only).
    Cores are float32 for float16/float32 tables, float64 for float64 tables.
    """
    table = check_table(table)
    dim = table.shape[1]
    sizes = paper_mode_sizes(dim) if mode_sizes is None else check_mode_sizes(mode_sizes, dim)
    eps = check_rel_error(rel_error)
    if rank is None and eps is None:
        rank = DEFAULT_RANK
    caps = check_rank_caps(rank, max_ranks(sizes))
    check_choice(rank_mode, RANK_MODES, "rank_mode")
    check_choice(method, METHODS, "method")
    check_positive_int(chunk_rows, "chunk_rows")
    if threads is not None:
        check_positive_int(threads, "threads")
    if method == "tensorly" and eps is not None:
        raise ValueError(
            "method 'tensorly' supports fixed ranks only; use 'batched' with rel_error"
        )
    dtype = np.result_type(table.dtype, np.float32)

    if method == "tensorly":
        cores = [c.astype(dtype) for c in _tensorly_cores(table, sizes, caps)]
        row_ranks = None
    else:
        cores, row_ranks = batched_tt_svd(
            table, sizes, caps, eps, rank_mode, dtype=dtype, chunk_rows=chunk_rows, threads=threads
        )
        if (row_ranks == row_ranks.max(axis=0)).all():
            row_ranks = None  # uniform ranks: the stored shapes say it all
    return PerTokenTT(
        cores=cores,
        mode_sizes=sizes,
        dim=dim,
        row_ranks=row_ranks,
        rank_caps=None if rank is None else caps,
        rel_error=eps,
        rank_mode=rank_mode,
    )
