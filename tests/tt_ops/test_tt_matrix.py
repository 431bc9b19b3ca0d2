"""Shared-core TT-matrix: index digits, row lookup without the table, exactness, error bound."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tensorgpt.tt_ops.shapes import suggest_factors
from tensorgpt.tt_ops.tt_matrix import TTMatrix, decompose_tt_matrix, token_digits


def random_tt_matrix(rng, vocab_factors, dim_factors, ranks) -> TTMatrix:
    cores = [
        rng.normal(size=(ranks[k], v, d, ranks[k + 1]))
        for k, (v, d) in enumerate(zip(vocab_factors, dim_factors))
    ]
    return TTMatrix(
        cores, vocab_factors, dim_factors, math.prod(vocab_factors), math.prod(dim_factors)
    )


def entry(tm: TTMatrix, t: int, c: int) -> float:
    """W[t, c] straight from the definition: digits most significant first, then a chain."""
    i = token_digits(np.array([t]), tm.vocab_factors)[0]
    j = token_digits(np.array([c]), tm.dim_factors)[0]
    x = np.ones((1, 1))
    for k, core in enumerate(tm.cores):
        x = x @ core[:, i[k], j[k], :]
    return float(x[0, 0])


def test_digits_most_significant_first():
    np.testing.assert_array_equal(
        token_digits(np.array([0, 1, 5, 6, 59]), (5, 2, 6)),
        [[0, 0, 0], [0, 0, 1], [0, 0, 5], [0, 1, 0], [4, 1, 5]],
    )


def test_rows_follow_the_documented_index_order():
    rng = np.random.default_rng(0)
    tm = random_tt_matrix(rng, (3, 4, 5), (2, 3, 2), (1, 2, 3, 1))
    rows = tm.rows(np.array([0, 17, 59]))
    for n, t in enumerate((0, 17, 59)):
        for c in (0, 1, 5, 11):
            assert rows[n, c] == pytest.approx(entry(tm, t, c), rel=1e-12, abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(
    order=st.integers(1, 3),
    vocab=st.integers(1, 80),
    seed=st.integers(0, 2**16),
    rank=st.integers(1, 6),
    dim_choice=st.sampled_from([6, 8, 12, 30]),
)
def test_property_rows_equal_reconstruct(order, vocab, seed, rank, dim_choice):
    rng = np.random.default_rng(seed)
    table = rng.normal(size=(vocab, dim_choice))
    tm = decompose_tt_matrix(table, rank=rank, dim_factors=suggest_factors(dim_choice, order))
    assert math.prod(tm.vocab_factors) >= vocab and math.prod(tm.dim_factors) == dim_choice
    assert all(r <= rank for r in tm.ranks)
    full = tm.reconstruct()
    assert full.shape == (vocab, dim_choice)
    idx = rng.integers(0, vocab, size=17)
    np.testing.assert_array_equal(tm.rows(idx), full[idx])


def test_full_rank_is_exact_with_padding_rows():
    table = np.random.default_rng(1).normal(size=(50, 12))  # 50 rows padded to 4*4*4 = 64
    tm = decompose_tt_matrix(table, vocab_factors=(4, 4, 4), dim_factors=(2, 3, 2), rank=10**6)
    assert tm.padded_vocab == 64
    np.testing.assert_allclose(tm.reconstruct(), table, atol=1e-12)


def test_low_rank_tt_matrix_is_recovered_at_its_ranks():
    rng = np.random.default_rng(2)
    truth = random_tt_matrix(rng, (5, 6, 4), (3, 2, 4), (1, 3, 2, 1))
    table = truth.reconstruct()
    tm = decompose_tt_matrix(table, vocab_factors=(5, 6, 4), dim_factors=(3, 2, 4), rank=[3, 2])
    assert tm.ranks == (1, 3, 2, 1) and tm.num_params() == truth.num_params()
    np.testing.assert_allclose(tm.reconstruct(), table, atol=1e-10)
    small = decompose_tt_matrix(table, vocab_factors=(5, 6, 4), dim_factors=(3, 2, 4), rank=1)
    assert np.linalg.norm(small.reconstruct() - table) > 1e-3 * np.linalg.norm(table)


@pytest.mark.parametrize("eps", [0.05, 0.3, 0.7])
def test_rel_error_bound_holds_for_the_table(eps):
    rng = np.random.default_rng(3)
    truth = random_tt_matrix(rng, (6, 6, 6), (4, 2, 4), (1, 4, 4, 1)).reconstruct()
    table = truth + 0.2 * rng.normal(size=truth.shape) * truth.std()
    tm = decompose_tt_matrix(table, vocab_factors=(6, 6, 6), dim_factors=(4, 2, 4), rel_error=eps)
    err = np.linalg.norm(tm.reconstruct() - table) / np.linalg.norm(table)
    assert err <= eps + 1e-9
    if eps > 0.2:  # above the noise level the TT-matrix structure shows: far fewer parameters
        assert tm.num_params() < table.size / 4


def test_defaults_and_dtype():
    table = np.random.default_rng(4).normal(size=(1000, 48)).astype(np.float32)
    tm = decompose_tt_matrix(table)
    assert tm.vocab_factors == (10, 10, 10) and tm.dim_factors == (4, 4, 3)
    assert max(tm.ranks) <= 16 and tm.cores[0].dtype == np.float32
    assert tm.nbytes() == 4 * tm.num_params() == 4 * sum(c.size for c in tm.cores)


def test_suggest_factors():
    assert suggest_factors(768, 3) == (12, 8, 8)
    assert suggest_factors(768, 5) == (4, 4, 4, 4, 3)
    assert suggest_factors(50257, 3, exact=False) == (37, 37, 37)
    for n, order in [(50257, 4), (49152, 3), (7, 3), (1, 2)]:
        f = suggest_factors(n, order, exact=False)
        assert len(f) == order and math.prod(f) >= n
        assert math.prod(f) < n * (1 + 1 / min(f)) + 1  # little padding
        e = suggest_factors(n, order)
        assert len(e) == order and math.prod(e) == n


def test_rows_rejects_out_of_range_indices():
    tm = decompose_tt_matrix(np.ones((10, 4)), vocab_factors=(2, 5), dim_factors=(2, 2), rank=1)
    with pytest.raises(ValueError, match="indices must be in"):
        tm.rows([10])  # a padding row is not a token
    with pytest.raises(ValueError, match="indices must be in"):
        tm.rows([-1])
