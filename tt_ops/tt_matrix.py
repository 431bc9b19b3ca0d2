"""Shared-core TT-matrix of a whole V x D table (TT-Rec; Hrinchuk et al. 2020), training-free.

The vocabulary is factorized V <= V' = v_1 * ... * v_d (zero rows pad V up to V'), the
dimension D = d_1 * ... * d_d exactly. Token t has digits (i_1, ..., i_d) in mixed radix
(v_1, ..., v_d), i_1 most significant: t = i_1 (v_2...v_d) + ... + i_d. Column c has digits
(j_1, ..., j_d) in radix (d_1, ..., d_d), j_1 most significant. Then

    W[t, c] ~= G_1[:, i_1, j_1, :] @ G_2[:, i_2, j_2, :] @ ... @ G_d[:, i_d, j_d, :]

with cores G_k of shape (r_{k-1}, v_k, d_k, r_k), r_0 = r_d = 1, shared by all tokens.
Decomposition: reshape the padded table to (v_1..v_d, d_1..d_d), interleave to
(v_1, d_1, ..., v_d, d_d), merge pairs into modes of size v_k d_k, and run TT-SVD (one
tensor: the batched engine with a batch of 1). Parameters: sum_k r_{k-1} v_k d_k r_k.

Row lookup (the ONNX graph does this): digits by integer division and modulo, Gather
G_k[:, i_k] for every token, then contract left to right:

    x = G_1[0, i_1]                                   # (d_1, r_1)
    x = (x @ G_k[:, i_k].reshape(r_{k-1}, d_k r_k)).reshape(-1, r_k)    for k = 2..d
    row = x.reshape(D)                                # C order: j_1 most significant
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .per_token import check_indices
from .shapes import check_mode_sizes, max_ranks, suggest_factors
from .tt_svd import batched_tt_svd
from .validation import check_rank_caps, check_rel_error, check_table

DEFAULT_ORDER = 3
DEFAULT_RANK = 16

__all__ = ["TTMatrix", "decompose_tt_matrix", "suggest_factors", "token_digits"]


def token_digits(indices: np.ndarray, vocab_factors: Sequence[int]) -> np.ndarray:
    """(len, d) digits of each index in mixed radix vocab_factors, most significant first."""
    digits = np.empty((len(indices), len(vocab_factors)), dtype=np.int64)
    rest = np.asarray(indices, dtype=np.int64)
    for k in range(len(vocab_factors) - 1, -1, -1):
        digits[:, k] = rest % vocab_factors[k]
        rest = rest // vocab_factors[k]
    return digits


@dataclass
class TTMatrix:
    """Shared TT-matrix cores of a V x D table; cores[k] has shape (r_{k-1}, v_k, d_k, r_k)."""

    cores: list[np.ndarray]
    vocab_factors: tuple[int, ...]
    dim_factors: tuple[int, ...]
    vocab_size: int
    dim: int
    rank_caps: tuple[int, ...] | None = None
    rel_error: float | None = None

    def __post_init__(self) -> None:
        # Checked here because cores may come from a file (load_compressed).
        self.vocab_factors = tuple(int(v) for v in self.vocab_factors)
        self.dim_factors = tuple(int(f) for f in self.dim_factors)
        self.vocab_size, self.dim = int(self.vocab_size), int(self.dim)
        check_mode_sizes(self.vocab_factors, self.vocab_size, "vocab_factors")
        check_mode_sizes(self.dim_factors, self.dim, "dim_factors", exact=True)
        d = len(self.vocab_factors)
        if len(self.dim_factors) != d or len(self.cores) != d:
            raise ValueError(
                f"vocab_factors ({d}), dim_factors ({len(self.dim_factors)}) and cores "
                f"({len(self.cores)}) must have the same length"
            )
        r_prev = 1
        for k, core in enumerate(self.cores):
            expect = (r_prev, self.vocab_factors[k], self.dim_factors[k])
            if core.ndim != 4 or core.shape[:3] != expect:
                raise ValueError(f"cores[{k}] must have shape {(*expect, 'r')}, got {core.shape}")
            r_prev = core.shape[3]
        if r_prev != 1:
            raise ValueError(f"cores[-1] must end with rank 1, got {self.cores[-1].shape}")

    @property
    def ranks(self) -> tuple[int, ...]:
        """(r_0, ..., r_d), r_0 = r_d = 1."""
        return tuple(int(c.shape[0]) for c in self.cores) + (1,)

    @property
    def padded_vocab(self) -> int:
        return math.prod(self.vocab_factors)

    @property
    def dtype(self) -> np.dtype:
        return self.cores[0].dtype

    def rows(self, indices: np.ndarray | Sequence[int], chunk_rows: int = 8192) -> np.ndarray:
        """Rows `indices` (len,) of the table as (len, D), without building the table.

        float32 output (float64 for float64 cores; float16 cores are widened first).
        """
        idx = check_indices(indices, self.vocab_size, "indices")
        digits = token_digits(idx, self.vocab_factors)
        dtype = np.result_type(self.dtype, np.float32)
        # Token-major cores: gathering G_k[:, i_k] is then a plain first-axis take.
        by_token = [np.ascontiguousarray(c.transpose(1, 0, 2, 3), dtype=dtype) for c in self.cores]
        out = np.empty((len(idx), self.dim), dtype=dtype)
        for s in range(0, len(idx), chunk_rows):
            dig = digits[s : s + chunk_rows]
            b = len(dig)
            g = by_token[0][dig[:, 0]]  # (b, 1, d_1, r_1)
            x = g.reshape(b, g.shape[2], g.shape[3])
            for k in range(1, len(by_token)):
                g = by_token[k][dig[:, k]]  # (b, r_{k-1}, d_k, r_k)
                x = (x @ g.reshape(b, g.shape[1], -1)).reshape(b, -1, g.shape[3])
            out[s : s + b] = x.reshape(b, self.dim)
        return out

    def reconstruct(self) -> np.ndarray:
        """The whole (V, D) table (row by row contraction, same order as rows())."""
        return self.rows(np.arange(self.vocab_size))

    def num_params(self) -> int:
        return int(sum(c.size for c in self.cores))

    def nbytes(self, dtype: np.dtype | str | None = None) -> int:
        """Bytes of the cores in `dtype` (default: their own)."""
        return self.num_params() * np.dtype(dtype or self.dtype).itemsize


def decompose_tt_matrix(
    table: np.ndarray,
    vocab_factors: Sequence[int] | None = None,
    dim_factors: Sequence[int] | None = None,
    rank: int | Sequence[int] | None = None,
    rel_error: float | None = None,
) -> TTMatrix:
    """TT-SVD of `table` (V, D) reshaped into a TT-matrix with shared cores.

    vocab_factors: v_1..v_d with prod >= V (zero rows pad the table); default
        suggest_factors(V, d, exact=False). dim_factors: d_1..d_d with prod == D; default
        suggest_factors(D, d). d = the length of whichever is given, else 3.
    rank: cap for every bond or d-1 per-bond caps; default 16 for fixed ranks, no cap with
        rel_error. rel_error: eps, truncation delta = eps / sqrt(d-1) * ||W||_F, so that
        ||W - TT(W)||_F <= eps ||W||_F (Oseledets).
    Cores are float32 for float16/float32 tables, float64 for float64 tables.
    """
    table = check_table(table)
    v, dim = table.shape
    vf = None if vocab_factors is None else check_mode_sizes(vocab_factors, v, "vocab_factors")
    df = None if dim_factors is None else check_mode_sizes(dim_factors, dim, "dim_factors", True)
    order = len(vf) if vf is not None else len(df) if df is not None else DEFAULT_ORDER
    vf = vf or suggest_factors(v, order, exact=False)
    df = df or suggest_factors(dim, order)
    if len(vf) != len(df):
        raise ValueError(
            f"vocab_factors {list(vf)} and dim_factors {list(df)} must have the same length"
        )
    eps = check_rel_error(rel_error)
    if rank is None and eps is None:
        rank = DEFAULT_RANK
    modes = tuple(a * b for a, b in zip(vf, df))
    caps = check_rank_caps(rank, max_ranks(modes))
    dtype = np.result_type(table.dtype, np.float32)

    d, vp = len(vf), math.prod(vf)
    padded = np.zeros((vp, dim), dtype=np.float64)
    padded[:v] = table
    # (v_1..v_d, d_1..d_d) -> (v_1, d_1, v_2, d_2, ...): core k owns the pair (v_k, d_k)
    interleave = [a for k in range(d) for a in (k, d + k)]
    tensor = padded.reshape(*vf, *df).transpose(interleave).reshape(1, -1)
    del padded
    cores, _ = batched_tt_svd(tensor, modes, caps, eps, "row", dtype=dtype, chunk_rows=1)
    cores = [c[0].reshape(c.shape[1], vf[k], df[k], c.shape[3]) for k, c in enumerate(cores)]
    return TTMatrix(
        cores=cores,
        vocab_factors=vf,
        dim_factors=df,
        vocab_size=v,
        dim=dim,
        rank_caps=None if rank is None else caps,
        rel_error=eps,
    )
