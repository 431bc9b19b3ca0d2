"""Reconstruction quality and size of a compressed table.

Definitions (X the original V x D table, Y the reconstruction, E = X - Y):
  mae            mean |E|, over all V*D entries (TensorGPT's MAE).
  norm_mae       mae / (max X - min X): the MAE relative to the value range of the original
                 table (our reading of TensorGPT's normalized MAE; the range, not a norm, so
                 it stays comparable across tables of any size).
  rel_fro        ||E||_F / ||X||_F.
  row_rel_err_*  percentiles p50/p90/p99 and max over rows of ||E_t|| / ||X_t||; rows whose
                 original norm is 0 are left out (their relative error is undefined).
  max_abs_err    max |E|.
Everything is accumulated in float64, chunk by chunk (no float64 copy of the whole table).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .validation import check_table


def table_metrics(
    original: np.ndarray,
    reconstructed: np.ndarray | Callable[[int, int], np.ndarray],
    chunk_rows: int = 8192,
) -> dict[str, float]:
    """Errors of `reconstructed` against `original`, both (V, D): see the module docstring.

    reconstructed: the (V, D) array, or a function (start, stop) -> its rows start..stop-1,
    called chunk by chunk in row order, so a decoded table need never exist whole (the same
    numbers as the array: the same chunks are summed in the same order)."""
    x = check_table(original, "original")
    if callable(reconstructed):
        rows = reconstructed
    else:
        y = check_table(reconstructed, "reconstructed")
        if x.shape != y.shape:
            raise ValueError(f"reconstructed has shape {y.shape}, original has shape {x.shape}")

        def rows(start: int, stop: int) -> np.ndarray:
            return y[start:stop]

    abs_sum = sq_err = sq_orig = max_abs = 0.0
    row_rel = []
    for s in range(0, x.shape[0], chunk_rows):
        xs = x[s : s + chunk_rows].astype(np.float64)
        ys = rows(s, s + len(xs))
        if ys.shape != xs.shape or not np.isfinite(ys).all():
            raise ValueError(
                f"reconstructed rows {s}..{s + len(xs) - 1}: expected finite values of shape "
                f"{xs.shape}, got {ys.shape}"
            )
        err = xs - ys
        abs_sum += float(np.abs(err).sum())
        max_abs = max(max_abs, float(np.abs(err).max()))
        row_err2 = np.einsum("ij,ij->i", err, err)
        row_orig2 = np.einsum("ij,ij->i", xs, xs)
        sq_err += float(row_err2.sum())
        sq_orig += float(row_orig2.sum())
        nonzero = row_orig2 > 0
        row_rel.append(np.sqrt(row_err2[nonzero] / row_orig2[nonzero]))
    row_rel = np.concatenate(row_rel)
    value_range = float(x.max()) - float(x.min())
    mae = abs_sum / x.size
    p50, p90, p99 = np.percentile(row_rel, [50, 90, 99]) if row_rel.size else (0.0, 0.0, 0.0)
    return {
        "mae": mae,
        "norm_mae": mae / value_range if value_range > 0 else 0.0 if mae == 0 else float("inf"),
        "rel_fro": float(np.sqrt(sq_err / sq_orig)) if sq_orig > 0 else float(np.sqrt(sq_err)),
        "row_rel_err_p50": float(p50),
        "row_rel_err_p90": float(p90),
        "row_rel_err_p99": float(p99),
        "row_rel_err_max": float(row_rel.max()) if row_rel.size else 0.0,
        "max_abs_err": max_abs,
    }


def compression_ratio(compressed, dtype: np.dtype | str | None = None) -> dict[str, float]:
    """Sizes of a PerTokenTT or TTMatrix against the dense V x D table.

    ratio = dense params (V*D) / compressed params; ratio_bytes = dense float32 bytes /
    bytes of the stored cores in `dtype` (default: the cores' own dtype; float16 cores halve
    the bytes, not the params). Per-token params count each row's own ranks.
    """
    dense_params = compressed.vocab_size * compressed.dim
    params = compressed.num_params()
    dense_bytes = dense_params * np.dtype(np.float32).itemsize
    nbytes = compressed.nbytes(dtype)
    return {
        "dense_params": dense_params,
        "params": params,
        "params_per_token": params / compressed.vocab_size,
        "ratio": dense_params / params,
        "dense_bytes_fp32": dense_bytes,
        "bytes": nbytes,
        "bytes_dtype": str(np.dtype(dtype or compressed.dtype)),
        "ratio_bytes": dense_bytes / nbytes,
    }
