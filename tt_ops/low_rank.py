"""Truncated SVD of a table, the low-rank baseline (numpy)."""

from __future__ import annotations

import numpy as np


def truncated_svd(table: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """(V, D) -> left (V, k) and right (k, D) float32 with table ~ left @ right, where
    right = diag(s) V^T carries the singular values. Computed in float64."""
    table = np.asarray(table, dtype=np.float64)
    if not 1 <= rank <= min(table.shape):
        raise ValueError(f"--rank must be between 1 and {min(table.shape)} for svd, got {rank}")
    u, s, vt = np.linalg.svd(table, full_matrices=False)
    left = np.ascontiguousarray(u[:, :rank], dtype=np.float32)
    right = np.ascontiguousarray(s[:rank, None] * vt[:rank], dtype=np.float32)
    return left, right
