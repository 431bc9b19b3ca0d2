"""tt_ops/rank_allocation.py: the exact error of dropping directions, and the budget rule."""

from __future__ import annotations

import numpy as np
import pytest

from tensorgpt.tt_ops.rank_allocation import (
    Directions,
    allocate_ranks,
    espace_directions,
    espace_directions_from_eig,
    factor_params,
    svd_directions,
)


def test_espace_error_of_dropping_directions_is_exact():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2000, 24)) @ rng.standard_normal((24, 24))  # correlated inputs
    w = rng.standard_normal((40, 24))
    c = x.T @ x / len(x)
    d = espace_directions(c, w)
    assert np.all(np.diff(d.errors) <= 1e-12)  # ordered by the error they carry
    for k in (4, 12, 23):
        p = d.basis[:, :k]
        measured = np.mean(np.sum((x @ w.T - x @ p @ p.T @ w.T) ** 2, axis=1))
        assert measured == pytest.approx(d.errors[k:].sum(), rel=1e-9)


def test_espace_beats_svd_on_the_activations_it_was_fitted_on():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3000, 32)) * np.geomspace(10, 0.01, 32)  # few strong directions
    x = x @ np.linalg.qr(rng.standard_normal((32, 32)))[0]
    w = rng.standard_normal((48, 32))
    c = x.T @ x / len(x)
    k = 8
    p = espace_directions(c, w).basis[:, :k]
    v = svd_directions(w).basis[:, :k]
    err_espace = np.mean(np.sum((x @ w.T - x @ p @ p.T @ w.T) ** 2, axis=1))
    err_svd = np.mean(np.sum((x @ w.T - x @ v @ v.T @ w.T) ** 2, axis=1))
    assert err_espace < 0.1 * err_svd


def _group(in_dim: int, out: int, decay: float) -> Directions:
    errors = decay ** np.arange(in_dim)
    return Directions(np.eye(in_dim), errors, out)


def test_allocation_respects_the_budget_and_favours_the_sensitive_group():
    flat, steep = _group(256, 512, 0.999), _group(256, 512, 0.9)
    budget = factor_params(192, 256, 512)
    ranks = allocate_ranks([flat, steep], budget, step=32)
    used = sum(factor_params(r, 256, 512) for r in ranks)
    assert used <= budget
    assert used > budget - factor_params(32, 256, 512)  # no affordable step left unused
    assert ranks[0] > ranks[1]  # the slowly decaying spectrum needs more directions


def test_groups_that_cannot_save_stay_dense_and_small_budgets_are_refused():
    square = _group(64, 64, 0.9)  # rank 32 costs 32 * 128 = 64 * 64: no saving
    wide = _group(64, 512, 0.9)
    ranks = allocate_ranks([square, wide], 64 * 64 + factor_params(32, 64, 512), step=32)
    assert ranks == [None, 32]
    with pytest.raises(ValueError, match="below the smallest factorization"):
        allocate_ranks([wide], factor_params(32, 64, 512) - 1, step=32)


def test_loss_scale_errors_are_compared_across_groups_as_they_are():
    """relative=False: a group whose errors are 1000x smaller in loss units gets the smaller
    rank even though its relative curve is the same; relative=True cannot tell them apart."""
    loud = Directions(np.eye(256), 0.95 ** np.arange(256), 512)
    quiet = Directions(np.eye(256), 1e-3 * 0.95 ** np.arange(256), 512)
    budget = factor_params(256, 256, 512)
    same = allocate_ranks([loud, quiet], budget, step=32)
    assert same[0] == same[1]
    loud_rank, quiet_rank = allocate_ranks([loud, quiet], budget, step=32, relative=False)
    assert quiet_rank is not None and quiet_rank < same[1]
    assert loud_rank is None or loud_rank > quiet_rank  # None: kept dense


def test_row_weights_give_the_exact_weighted_error():
    """e_i = lam_i sum_r rho_r (W u_i)_r^2 / 2 adds up to 1/2 E[sum_r rho_r (W x - W P P^T x)_r^2]."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1500, 16)) @ rng.standard_normal((16, 16))
    w = rng.standard_normal((20, 16))
    rho = rng.uniform(0.1, 2.0, 20)
    c = x.T @ x / len(x)
    lam, u = np.linalg.eigh(c)
    d = espace_directions_from_eig(lam, u, w, rho)
    p = d.basis[:, :6]
    residual = x @ w.T - x @ p @ p.T @ w.T
    assert np.mean((residual**2) @ rho) / 2 == pytest.approx(d.errors[6:].sum(), rel=1e-9)
