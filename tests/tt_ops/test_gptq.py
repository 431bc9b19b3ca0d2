"""GPTQ onto the block grids (tt_ops/gptq.py) and the format choice under a byte budget
(tt_ops/format_allocation.py)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from tensorgpt.tt_ops.format_allocation import allocate_formats
from tensorgpt.tt_ops.gptq import gptq_blocks, inverse_cholesky
from tensorgpt.tt_ops.q3_blocks import fit_q3_blocks
from tensorgpt.tt_ops.q4_grid import decode_blocks, fit_q4_grid


def _correlated_inputs(rng, n: int, k: int) -> np.ndarray:
    mix = rng.normal(size=(k, k)) / np.sqrt(k) + 0.3 * np.eye(k)  # strongly correlated
    return rng.normal(size=(n, k)) @ mix * rng.uniform(0.2, 3, size=k)


@pytest.mark.parametrize("block", [32, 64])
def test_gptq_beats_rounding_on_the_output_error(block):
    """On correlated inputs GPTQ's output error ||X (W - Q)|| is well below the one of the
    plain q3 fit on the same grid family, and its codes decode to what it claims."""
    rng = np.random.default_rng(0)
    k, n = 128, 48
    x = _correlated_inputs(rng, 2048, k)
    w = rng.normal(size=(k, n)).astype(np.float32)
    codes, d, m = gptq_blocks(w, inverse_cholesky(x.T @ x), fit_q3_blocks, 8, block)
    assert codes.shape == (k // block, block, n) and d.shape == (k // block, n)
    assert codes.max() <= 7 and d.dtype == np.float16
    q = decode_blocks(codes, d, m).reshape(k, n)
    qr, dr, mr = fit_q3_blocks(w.reshape(k // block, block, n))
    rounded = decode_blocks(qr, dr, mr).reshape(k, n)
    err = np.linalg.norm(x @ (w - q))
    assert err < 0.8 * np.linalg.norm(x @ (w - rounded))


def test_gptq_keeps_weights_already_on_the_q4_grid():
    rng = np.random.default_rng(1)
    k, n = 64, 16
    d = rng.uniform(0.01, 0.05, size=(k // 32, n)).astype(np.float16)
    m = (-rng.uniform(0, 0.3, size=(k // 32, n))).astype(np.float16)
    q = rng.integers(0, 16, size=(k // 32, 32, n)).astype(np.uint8)
    q[:, 0], q[:, 1] = 0, 15  # every block spans the 16 levels: min/max recovers its grid
    w = decode_blocks(q, d, m).reshape(k, n)
    x = _correlated_inputs(rng, 256, k)
    codes, d2, m2 = gptq_blocks(w, inverse_cholesky(x.T @ x), fit_q4_grid, 16)
    assert np.array_equal(decode_blocks(codes, d2, m2).reshape(k, n), w)


def test_gptq_refuses_a_block_that_does_not_divide_k():
    with pytest.raises(ValueError, match="multiple of 64"):
        gptq_blocks(np.zeros((96, 4)), np.eye(96), fit_q3_blocks, 8, 64)


def test_allocation_is_the_best_choice_under_the_budget():
    """Against brute force on small problems whose costs are convex in the bytes (each step
    to a smaller format costs more per byte than the one before)."""
    rng = np.random.default_rng(2)
    sizes = np.array([5.0, 4.0, 3.5])
    for _ in range(20):
        m = 5
        scale = rng.uniform(0.1, 10, size=(m, 1)) * rng.uniform(1, 3, size=(m, 1))
        loss = scale * np.array([0.0, 1.0, 3.0]) * rng.uniform(0.8, 1.2, size=(m, 1))
        nbytes = np.tile(sizes, (m, 1)) * rng.integers(1, 4, size=(m, 1))
        budget = rng.uniform(nbytes.min(1).sum(), nbytes.max(1).sum())
        choice = allocate_formats(loss, nbytes, budget)
        got = loss[np.arange(m), choice].sum()
        assert nbytes[np.arange(m), choice].sum() <= budget
        best = min(
            loss[np.arange(m), c].sum()
            for c in itertools.product(range(3), repeat=m)
            if nbytes[np.arange(m), c].sum() <= budget
        )
        # greedy on the hull: optimal up to the one matrix whose last step overshoots
        assert best <= got <= best + loss.max() + 1e-9
    with pytest.raises(ValueError, match="below the smallest"):
        allocate_formats(loss, nbytes, nbytes.min(1).sum() - 1)
