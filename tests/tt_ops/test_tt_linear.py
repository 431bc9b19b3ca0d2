"""tt_ops/tt_linear.py: a weight as two TT-matrix cores plus its largest residual entries."""

from __future__ import annotations

import numpy as np
import pytest

from tensorgpt.tt_ops.tt_linear import (
    ENTRY_PARAMS,
    kron_svd,
    plan_saten,
    saten_layer,
    tt_of,
    useful_rank,
    weight_grid,
)


@pytest.mark.parametrize(("out", "in_dim"), [(576, 1536), (192, 576), (96, 64), (7, 5)])
def test_grid_multiplies_to_the_shape(out, in_dim):
    (o1, o2), (i1, i2) = weight_grid(out, in_dim)
    assert (o1 * o2, i1 * i2) == (out, in_dim)
    if in_dim % 32 == 0 and in_dim > 32:
        assert i2 == 32  # core 2's contraction axis is one q4 block


def test_full_rank_is_exact_and_error_is_the_dropped_singular_values():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((96, 64))
    of, if_ = weight_grid(*w.shape)
    u, s, vt = kron_svd(w, of, if_)
    full = tt_of(u, s, vt, len(s), of, if_).reconstruct()
    np.testing.assert_allclose(full, w, atol=1e-4)
    for rank in (3, 10):
        approx = tt_of(u, s, vt, rank, of, if_).reconstruct()
        err = np.square(approx - w).sum()
        np.testing.assert_allclose(err, np.square(s[rank:]).sum(), rtol=1e-4)


def test_sparse_residual_restores_exactly_the_chosen_entries():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((96, 64))
    d = rng.uniform(0.5, 2.0, 64)
    layer = saten_layer(w, d, rank=6, per_row=5)
    rows = np.arange(96)[:, None]
    assert layer.cols.shape == (96, 5) and np.all(np.diff(layer.cols, axis=1) > 0)
    dense = layer.dense()
    np.testing.assert_allclose(dense[rows, layer.cols], w[rows, layer.cols], atol=1e-5)
    # elsewhere the layer is the TT part alone, and no dropped entry of a row is larger
    # (in |E_ab| d_b) than the ones the row kept
    tt_only = layer.tt.reconstruct() / d
    kept = np.zeros(w.shape, bool)
    kept[rows, layer.cols] = True
    np.testing.assert_allclose(dense[~kept], tt_only[~kept], atol=1e-6)
    weighted = np.abs(w - tt_only) * d
    dropped_max = np.where(kept, -np.inf, weighted).max(1)
    assert np.all(dropped_max <= np.where(kept, weighted, np.inf).min(1) + 1e-6)
    assert layer.num_params() == layer.tt.num_params() + 64 + ENTRY_PARAMS * 96 * 5


def test_plan_keeps_the_budget_and_reports_every_share():
    rng = np.random.default_rng(2)
    ws = [rng.standard_normal((96, 64)) for _ in range(3)] + [rng.standard_normal((64, 128))]
    scales = [np.ones(w.shape[1]) for w in ws]
    budget = int(0.6 * sum(w.size for w in ws))
    plan, layers = plan_saten(ws, scales, budget, step=4)
    stored = sum(w.size if x is None else x.num_params() for w, x in zip(ws, layers))
    assert stored <= budget
    assert plan.errors[plan.share] == min(plan.errors.values())
    assert plan.entries == sum(x.cols.size for x in layers if x is not None) > 0
    assert [x.cols.shape[1] for x in layers] == plan.per_row
    for w, x, k in zip(ws, layers, plan.ranks):
        assert x is not None and x.tt.ranks[1] == k <= useful_rank(*weight_grid(*w.shape))
    with pytest.raises(ValueError, match="smallest TT-matrix cores"):
        plan_saten(ws, scales, 100, step=4)
