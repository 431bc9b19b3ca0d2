"""Per-token TT (TensorGPT): batched TT-SVD against TensorLy, exactness, error bounds, append."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tensorgpt.tt_ops.per_token import PerTokenTT, decompose_per_token
from tensorgpt.tt_ops.shapes import max_ranks, paper_mode_sizes

FULL = 10**6  # a rank cap above every structural rank: no truncation


def row_errors(table: np.ndarray, tt: PerTokenTT) -> np.ndarray:
    err = table.astype(np.float64) - tt.reconstruct()
    return np.linalg.norm(err, axis=1)


def assert_error_parity(table, a: PerTokenTT, b: PerTokenTT, rtol=1e-4):
    """Per-row reconstruction errors agree to rtol (absolute slack for exact rows)."""
    ea, eb = row_errors(table, a), row_errors(table, b)
    slack = 1e-6 * np.linalg.norm(table.astype(np.float64), axis=1) + 1e-12
    assert np.all(np.abs(ea - eb) <= rtol * eb + slack), np.max(np.abs(ea - eb) / (eb + slack))
    total_a, total_b = np.linalg.norm(ea), np.linalg.norm(eb)
    assert abs(total_a - total_b) <= rtol * total_b + 1e-9


def manual_row(tt: PerTokenTT, t: int) -> np.ndarray:
    """The documented contraction, literally, for one token (the ONNX graph's order)."""
    n1, r1 = tt.cores[0].shape[2], tt.cores[0].shape[3]
    x = tt.cores[0][t].reshape(n1, r1).astype(np.float64)
    for core in tt.cores[1:]:
        r_prev, n_k, r_k = core.shape[1:]
        x = (x @ core[t].reshape(r_prev, n_k * r_k)).reshape(-1, r_k)
    return x.reshape(-1)[: tt.dim]


def tt_row(rng, order: int, rank: int = 2) -> np.ndarray:
    """A random vector of length 2^order (order >= 2) with TT ranks <= `rank` over 2s."""
    x = rng.normal(size=(2, rank))
    for k in range(1, order):
        r_next = rank if k < order - 1 else 1
        x = (x @ rng.normal(size=(rank, 2 * r_next))).reshape(-1, r_next)
    return x.reshape(-1)


def structured_table(rng, v=60, d=96):
    """Rows with decaying spectra: smooth waves, rank-2 TT rows plus noise, sparse spikes."""
    t = np.linspace(0, 1, d)
    waves = np.sin(2 * np.pi * rng.uniform(1, 4, (v // 3, 1)) * t + rng.uniform(0, 6, (v // 3, 1)))
    waves *= rng.uniform(0.5, 2.0, (v // 3, 1))
    order = max(2, (d - 1).bit_length())
    low = [tt_row(rng, order)[:d] for _ in range(v // 3)]
    low = np.array(low) + 1e-3 * rng.normal(size=(v // 3, d))
    spikes = np.zeros((v - 2 * (v // 3), d))
    spikes[np.arange(len(spikes)), rng.integers(0, d, len(spikes))] = rng.normal(size=len(spikes))
    spikes += 0.01 * rng.normal(size=spikes.shape)
    return np.concatenate([waves, low, spikes])


# ---------------------------------------------------------------- exactness, shapes, order


@pytest.mark.parametrize("mode_sizes", [None, (4, 4, 4, 4, 3), (2, 3, 4, 5)])
def test_full_rank_is_exact(mode_sizes):
    rng = np.random.default_rng(0)
    table = rng.normal(size=(37, 96))
    tt = decompose_per_token(table, rank=FULL, mode_sizes=mode_sizes)
    assert tt.ranks == max_ranks(tt.mode_sizes)
    np.testing.assert_allclose(tt.reconstruct(), table, atol=1e-12)


def test_paper_shapes_and_params_for_768():
    table = np.random.default_rng(1).normal(size=(5, 768)).astype(np.float32)
    tt = decompose_per_token(table)  # defaults: 2s up to 1024, rank 4
    assert tt.mode_sizes == (2,) * 10 and tt.padded_dim == 1024 and tt.dim == 768
    assert tt.ranks == (1, 2, 4, 4, 4, 4, 4, 4, 4, 2, 1)
    assert [c.shape for c in tt.cores][:3] == [(5, 1, 2, 2), (5, 2, 2, 4), (5, 4, 2, 4)]
    assert tt.num_params() == 5 * 232 and tt.row_ranks is None
    assert tt.nbytes() == 5 * 232 * 4 and tt.nbytes("float16") == 5 * 232 * 2
    assert tt.cores[0].dtype == np.float32 and tt.reconstruct().dtype == np.float32


def test_documented_contraction_order_and_row_subset():
    table = np.random.default_rng(2).normal(size=(20, 50))
    tt = decompose_per_token(table, rank=3, mode_sizes=(2, 3, 3, 3))  # 54 >= 50: 4 zeros pad
    full = tt.reconstruct()
    for t in (0, 7, 19):
        np.testing.assert_allclose(manual_row(tt, t), full[t], rtol=1e-12, atol=1e-12)
    rows = np.array([19, 3, 3, 0])
    np.testing.assert_array_equal(tt.reconstruct(rows), full[rows])
    assert tt.reconstruct([]).shape == (0, 50)


def test_tt_row_of_known_rank_is_recovered_exactly():
    # a row built from rank-(1,2,3,1) cores is reproduced exactly at those caps
    rng = np.random.default_rng(3)
    a, b, c = rng.normal(size=(1, 4, 2)), rng.normal(size=(2, 5, 3)), rng.normal(size=(3, 6, 1))
    row = np.einsum("aib,bjc,ckd->ijk", a, b, c).reshape(1, -1)
    tt = decompose_per_token(row, rank=[2, 3], mode_sizes=(4, 5, 6))
    assert tt.ranks == (1, 2, 3, 1)
    np.testing.assert_allclose(tt.reconstruct(), row, atol=1e-12)
    lower = decompose_per_token(row, rank=[2, 2], mode_sizes=(4, 5, 6))
    assert np.linalg.norm(lower.reconstruct() - row) > 1e-6  # the cap really truncates


# ---------------------------------------------------------------- TensorLy parity


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind", ["random", "structured"])
@pytest.mark.parametrize("rank", [1, 2, 4, [2, 3, 5]])
def test_batched_matches_tensorly_errors(dtype, kind, rank):
    rng = np.random.default_rng(4)
    table = rng.normal(size=(60, 96)) if kind == "random" else structured_table(rng)
    table = table.astype(dtype)
    sizes = (2, 4, 4, 3) if isinstance(rank, list) else None  # 96 = 2*4*4*3: three bonds
    ours = decompose_per_token(table, rank=rank, mode_sizes=sizes, chunk_rows=16)
    ref = decompose_per_token(table, rank=rank, mode_sizes=sizes, method="tensorly")
    assert ours.ranks == ref.ranks
    assert ours.cores[0].dtype == ref.cores[0].dtype == np.result_type(dtype, np.float32)
    assert_error_parity(table, ours, ref)
    assert row_errors(table, ours).max() > 1e-3  # the ranks truncate: a real comparison


def test_parity_on_paper_tensorization():
    table = np.random.default_rng(5).normal(size=(40, 768)).astype(np.float32)
    ours = decompose_per_token(table, rank=4)
    ref = decompose_per_token(table, rank=4, method="tensorly")
    assert ours.ranks == ref.ranks == (1, 2, 4, 4, 4, 4, 4, 4, 4, 2, 1)
    assert_error_parity(table, ours, ref)


@settings(max_examples=40, deadline=None)
@given(
    modes=st.lists(st.integers(1, 4), min_size=1, max_size=5),
    pad=st.integers(0, 3),
    vocab=st.integers(1, 9),
    caps=st.lists(st.integers(1, 6), min_size=4, max_size=4),
    per_bond=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_property_random_shapes_match_tensorly(modes, pad, vocab, caps, per_bond, seed):
    n = math.prod(modes)
    dim = max(1, n - pad)
    rank = caps[: len(modes) - 1] if per_bond else caps[0]
    table = np.random.default_rng(seed).normal(size=(vocab, dim))
    ours = decompose_per_token(table, rank=rank, mode_sizes=modes, chunk_rows=4)
    ref = decompose_per_token(table, rank=rank, mode_sizes=modes, method="tensorly")
    assert ours.ranks == ref.ranks
    structural = max_ranks(modes)
    bond_caps = rank if per_bond else [rank] * (len(modes) - 1)
    for k in range(1, len(modes)):
        assert ours.ranks[k] == min(
            bond_caps[k - 1], structural[k], ours.ranks[k - 1] * modes[k - 1]
        )
    assert ours.reconstruct().shape == (vocab, dim)
    assert_error_parity(table, ours, ref)


# ---------------------------------------------------------------- error-bounded truncation


@settings(max_examples=25, deadline=None)
@given(
    eps=st.sampled_from([0.0, 0.05, 0.2, 0.5, 0.9]),
    modes=st.sampled_from([(2,) * 7, (4, 4, 4, 2), (3, 5, 7), (8, 16)]),
    seed=st.integers(0, 2**16),
)
def test_property_every_row_meets_rel_error(eps, modes, seed):
    rng = np.random.default_rng(seed)
    table = structured_table(rng, v=30, d=math.prod(modes) - 1)
    for mode in ("row", "every-row"):
        tt = decompose_per_token(table, mode_sizes=modes, rel_error=eps, rank_mode=mode)
        rel = row_errors(table, tt) / np.linalg.norm(table, axis=1)
        assert rel.max() <= eps + 1e-7, (mode, rel.max())
    tt = decompose_per_token(table, mode_sizes=modes, rel_error=eps, rank_mode="table")
    total = np.linalg.norm(row_errors(table, tt)) / np.linalg.norm(table)
    assert total <= eps + 1e-7


@pytest.mark.parametrize("rank_mode", ["row", "every-row", "table"])
def test_chunks_and_threads_do_not_change_the_result(rank_mode):
    # table-wide modes must pick their ranks over all chunks, not chunk by chunk
    table = structured_table(np.random.default_rng(10), v=45, d=64)
    one = decompose_per_token(table, rel_error=0.05, rank_mode=rank_mode, mode_sizes=(2,) * 6)
    many = decompose_per_token(
        table, rel_error=0.05, rank_mode=rank_mode, mode_sizes=(2,) * 6, chunk_rows=7, threads=2
    )
    assert many.ranks == one.ranks
    if one.row_ranks is not None:
        np.testing.assert_array_equal(many.row_ranks, one.row_ranks)
    # cores may differ by gauge where singular values are (nearly) equal: compare the tensors
    np.testing.assert_allclose(many.reconstruct(), one.reconstruct(), rtol=1e-9, atol=1e-12)
    fixed = decompose_per_token(table, rank=3, chunk_rows=4, threads=3)
    expected = decompose_per_token(table, rank=3).reconstruct()
    np.testing.assert_allclose(fixed.reconstruct(), expected, rtol=1e-9, atol=1e-12)


def test_row_ranks_adapt_and_padding_is_zero():
    rng = np.random.default_rng(6)
    easy = np.tile(np.sin(np.linspace(0, 3, 64)), (10, 1)) * rng.uniform(1, 2, (10, 1))
    hard = rng.normal(size=(10, 64))
    table = np.concatenate([easy, hard])
    tt = decompose_per_token(table, mode_sizes=(2,) * 6, rel_error=0.1, rank_mode="row")
    assert tt.row_ranks is not None and tt.row_ranks.shape == (20, 7)
    per_row = (tt.row_ranks[:, :-1] * 2 * tt.row_ranks[:, 1:]).sum(axis=1)
    assert per_row[:10].max() < per_row[10:].min()  # smooth rows need fewer parameters
    assert tt.num_params() == per_row.sum() < sum(c.size for c in tt.cores)
    for k, core in enumerate(tt.cores):  # unused slices of every row are exactly zero
        for t in range(20):
            r0, r1 = tt.row_ranks[t, k], tt.row_ranks[t, k + 1]
            mask = np.ones(core.shape[1:], dtype=bool)
            mask[:r0, :, :r1] = False
            assert not core[t][mask].any()
    # one rank set for all rows: no per-row ranks, more parameters than per-row
    shared = decompose_per_token(table, mode_sizes=(2,) * 6, rel_error=0.1, rank_mode="every-row")
    assert shared.row_ranks is None and shared.num_params() > tt.num_params()


def test_rank_cap_limits_error_bounded_ranks():
    table = np.random.default_rng(7).normal(size=(8, 256))
    tt = decompose_per_token(table, rank=3, rel_error=0.01)
    assert max(tt.ranks) == 3
    uncapped = decompose_per_token(table, rel_error=0.01)
    assert max(uncapped.ranks) > 3


# ---------------------------------------------------------------- adding tokens


def test_append_rows_keeps_existing_cores_bit_identical():
    rng = np.random.default_rng(8)
    table, extra = rng.normal(size=(50, 96)).astype(np.float32), rng.normal(size=(7, 96))
    tt = decompose_per_token(table, rank=4)
    before = [c.copy() for c in tt.cores]
    grown = tt.append_rows(extra)
    assert grown.vocab_size == 57 and grown.ranks == tt.ranks
    for old, new in zip(before, grown.cores):
        assert new[:50].tobytes() == old.tobytes()
    for a, b in zip(tt.cores, before):  # the original object is untouched
        assert a.tobytes() == b.tobytes()
    alone = decompose_per_token(extra, rank=4)  # new rows: decomposed alone, stored as float32
    for k, core in enumerate(alone.cores):
        np.testing.assert_array_equal(grown.cores[k][50:], core.astype(np.float32))
    assert grown.cores[0].dtype == np.float32
    np.testing.assert_array_equal(grown.reconstruct(np.arange(50)), tt.reconstruct())


def test_append_rows_widening_bonds_pads_with_zeros():
    rng = np.random.default_rng(9)
    smooth = np.tile(np.linspace(-1, 1, 64), (6, 1)) * rng.uniform(1, 2, (6, 1))  # rank-1 rows
    tt = decompose_per_token(smooth, mode_sizes=(2,) * 6, rel_error=0.01)
    grown = tt.append_rows(rng.normal(size=(3, 64)))
    assert max(grown.ranks) > max(tt.ranks)
    for old, new in zip(tt.cores, grown.cores):
        _, a, _, b = old.shape
        assert new[:6, :a, :, :b].tobytes() == old.tobytes()
        assert not new[:6, a:].any() and not new[:6, :, :, b:].any()
    np.testing.assert_allclose(grown.reconstruct(np.arange(6)), tt.reconstruct(), rtol=1e-6)
    assert grown.row_ranks is not None
    np.testing.assert_array_equal(grown.row_ranks[:6], np.tile(tt.ranks, (6, 1)))


def test_append_rows_to_hand_made_cores_keeps_their_ranks():
    tt = decompose_per_token(np.random.default_rng(11).normal(size=(4, 32)), rank=[2, 3, 3, 2])
    bare = PerTokenTT(cores=tt.cores, mode_sizes=tt.mode_sizes, dim=tt.dim)  # no settings
    grown = bare.append_rows(np.ones((2, 32)))
    assert grown.ranks == tt.ranks == (1, 2, 3, 3, 2, 1) and grown.row_ranks is None


def test_append_rows_rejects_wrong_width():
    tt = decompose_per_token(np.ones((3, 16)), rank=2)
    with pytest.raises(ValueError, match="new_table must have 16 columns"):
        tt.append_rows(np.ones((2, 15)))


def test_paper_mode_sizes():
    assert paper_mode_sizes(768) == (2,) * 10
    assert paper_mode_sizes(1024) == (2,) * 10
    assert paper_mode_sizes(1025) == (2,) * 11
    assert paper_mode_sizes(1) == (2,)
