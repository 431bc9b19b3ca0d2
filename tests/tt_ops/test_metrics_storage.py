"""Metrics on hand-computed cases; save/load round trips of both formats."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

from tensorgpt.tt_ops.metrics import compression_ratio, table_metrics
from tensorgpt.tt_ops.per_token import decompose_per_token
from tensorgpt.tt_ops.storage import load_compressed, read_metadata, save_compressed
from tensorgpt.tt_ops.tt_matrix import decompose_tt_matrix


def test_table_metrics_by_hand():
    x = np.array([[3.0, 4.0], [0.0, 1.0], [0.0, 0.0]])
    y = np.array([[3.0, 5.0], [0.0, 0.0], [0.5, 0.0]])
    m = table_metrics(x, y)
    assert m["mae"] == pytest.approx((1 + 1 + 0.5) / 6)
    assert m["norm_mae"] == pytest.approx(m["mae"] / 4.0)  # range of x: 4 - 0
    assert m["rel_fro"] == pytest.approx(np.sqrt(1 + 1 + 0.25) / np.sqrt(26))
    # row errors relative to row norms: 1/5 and 1/1; the zero row is left out
    assert m["row_rel_err_max"] == pytest.approx(1.0)
    assert m["row_rel_err_p50"] == pytest.approx(0.6)
    assert m["max_abs_err"] == pytest.approx(1.0)


def test_table_metrics_chunking_does_not_change_results():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(100, 7)), rng.normal(size=(100, 7))
    a, b = table_metrics(x, y), table_metrics(x, y, chunk_rows=9)
    assert a == pytest.approx(b)
    assert table_metrics(x, x)["rel_fro"] == 0.0


def test_metrics_reject_mismatched_shapes():
    with pytest.raises(ValueError, match="reconstructed has shape"):
        table_metrics(np.ones((3, 4)), np.ones((3, 5)))


def test_compression_ratio_counts_params_and_bytes():
    table = np.random.default_rng(1).normal(size=(10, 768)).astype(np.float32)
    tt = decompose_per_token(table, rank=4)
    r = compression_ratio(tt)
    assert r["params"] == 10 * 232 and r["dense_params"] == 7680
    assert r["ratio"] == pytest.approx(768 / 232)
    assert r["ratio_bytes"] == pytest.approx(768 / 232)
    half = compression_ratio(tt, "float16")
    assert half["bytes"] == 10 * 232 * 2 and half["ratio_bytes"] == pytest.approx(2 * 768 / 232)


# ---------------------------------------------------------------- storage


@pytest.fixture()
def table():
    return np.random.default_rng(2).normal(size=(40, 24)).astype(np.float32)


def assert_same_cores(a, b):
    assert len(a.cores) == len(b.cores)
    for x, y in zip(a.cores, b.cores):
        assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()


@pytest.mark.parametrize("rel_error", [None, 0.2])
def test_per_token_round_trip(tmp_path, table, rel_error):
    tt = decompose_per_token(table, mode_sizes=(2, 3, 4), rel_error=rel_error)
    path = save_compressed(tmp_path / "emb.safetensors", tt, source="unit-test")
    back = load_compressed(path)
    assert_same_cores(tt, back)
    assert (back.mode_sizes, back.dim, back.rank_mode) == (tt.mode_sizes, tt.dim, tt.rank_mode)
    assert back.rel_error == rel_error and back.rank_caps == tt.rank_caps
    if tt.row_ranks is None:
        assert back.row_ranks is None
    else:
        np.testing.assert_array_equal(back.row_ranks, tt.row_ranks)
    assert back.num_params() == tt.num_params()
    np.testing.assert_array_equal(back.reconstruct(), tt.reconstruct())
    facts = read_metadata(path)
    assert facts["method"] == "tt" and facts["source"] == "unit-test"
    assert facts["padding"] == 0 and facts["ranks"] == list(tt.ranks)
    assert facts["core_shapes"] == [list(c.shape) for c in tt.cores]
    assert [p.name for p in tmp_path.iterdir()] == ["emb.safetensors"]  # no temp file left


def test_tt_matrix_round_trip_and_float16(tmp_path, table):
    tm = decompose_tt_matrix(table, vocab_factors=(4, 10), dim_factors=(4, 6), rank=3)
    back = load_compressed(save_compressed(tmp_path / "m.safetensors", tm))
    assert_same_cores(tm, back)
    assert (back.vocab_factors, back.dim_factors, back.vocab_size) == ((4, 10), (4, 6), 40)
    np.testing.assert_array_equal(back.rows([3, 39]), tm.rows([3, 39]))
    half = load_compressed(save_compressed(tmp_path / "h.safetensors", tm, dtype="float16"))
    assert half.cores[0].dtype == np.float16 and half.reconstruct().dtype == np.float32
    np.testing.assert_allclose(half.reconstruct(), tm.reconstruct(), rtol=2e-2, atol=2e-2)
    with safe_open(str(tmp_path / "m.safetensors"), framework="np") as f:
        meta = f.metadata()
    assert meta["format"] == "tensorgpt-tt"
    facts = json.loads(meta["tensorgpt"])
    assert facts["method"] == "tt-matrix" and facts["padding"] == 0 and facts["dtype"] == "float32"


def test_save_replaces_existing_file_atomically(tmp_path, table):
    path = tmp_path / "emb.safetensors"
    path.write_bytes(b"old")
    save_compressed(path, decompose_per_token(table, rank=1))
    assert load_compressed(path).ranks == (1,) * 6
    assert sorted(os.listdir(tmp_path)) == ["emb.safetensors"]


def test_load_rejects_foreign_files(tmp_path):
    other = tmp_path / "weights.safetensors"
    save_file({"w": np.ones((2, 2), dtype=np.float32)}, str(other))
    with pytest.raises(ValueError, match="not a tensorgpt compressed table"):
        load_compressed(other)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 3)
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_compressed(junk)
    with pytest.raises(FileNotFoundError):
        load_compressed(tmp_path / "missing.safetensors")


def test_save_rejects_other_objects_and_dtypes(tmp_path, table):
    with pytest.raises(ValueError, match="obj must be a PerTokenTT or a TTMatrix"):
        save_compressed(tmp_path / "x.safetensors", np.ones(3))
    tt = decompose_per_token(table, rank=1)
    for dtype in ("int8", "bogus"):
        with pytest.raises(ValueError, match="dtype must be a floating dtype"):
            save_compressed(tmp_path / "x.safetensors", tt, dtype=dtype)
    assert not list(tmp_path.iterdir())
