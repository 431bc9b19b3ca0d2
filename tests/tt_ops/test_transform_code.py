"""Transform-coded embedding tables (tt_ops/transform_code.py): small random tables, fast."""

from __future__ import annotations

import numpy as np
import pytest

from tensorgpt.tt_ops.bit_packing import pack_bits, unpack_bits
from tensorgpt.tt_ops.transform_code import load_transform_code
from tensorgpt.tt_ops.transform_fit import fit_transform_code

V, D = 1500, 48


@pytest.fixture(scope="module")
def table():
    rng = np.random.default_rng(1)
    scales = np.linspace(2.0, 0.05, D)
    return (rng.standard_normal((V, D)) * scales + 0.3).astype(np.float32)


@pytest.fixture(scope="module")
def counts():
    rng = np.random.default_rng(2)
    c = rng.zipf(1.4, V).astype(np.float64)
    c[rng.random(V) < 0.25] = 0  # unseen tokens
    return c


def rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_decode_shape_dtype_and_rows(table, counts):
    enc = fit_transform_code(table, bits_per_weight=2.0, token_counts=counts)
    x = enc.decode()
    assert x.shape == (V, D) and x.dtype == np.float32
    rows = np.array([0, 7, V - 1, 7])
    np.testing.assert_allclose(enc.decode(rows=rows), x[rows], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="rows"):
        enc.decode(rows=[V])


@pytest.mark.parametrize("bpw", [0.75, 1.5, 3.0])
def test_budget_respected_and_bytes_accounted(table, counts, bpw):
    enc = fit_transform_code(table, bits_per_weight=bpw, token_counts=counts)
    budget = int(bpw * V * D / 8)
    assert enc.nbytes() <= budget
    assert enc.nbytes() >= 0.8 * budget  # the budget is actually used
    # nbytes == the bytes of the storage arrays (class ids packed 4 bits)
    assert enc.nbytes() == sum(a.nbytes for a in enc.arrays().values())
    assert enc.ratio() == pytest.approx(table.nbytes / enc.nbytes())


def test_byte_budget_argument(table):
    enc = fit_transform_code(table, byte_budget=20_000)
    assert enc.nbytes() <= 20_000


def test_packing_roundtrip():
    rng = np.random.default_rng(0)
    for w in (1, 2, 4, 8):
        v = rng.integers(0, 1 << w, size=37).astype(np.uint8)
        p = pack_bits(v, w)
        assert p.nbytes == -(-37 * w // 8)
        np.testing.assert_array_equal(unpack_bits(p, w, 37), v)


def test_deterministic_with_seed(table, counts):
    a = fit_transform_code(table, bits_per_weight=1.5, token_counts=counts, seed=3).decode()
    b = fit_transform_code(table, bits_per_weight=1.5, token_counts=counts, seed=3).decode()
    np.testing.assert_array_equal(a, b)


def test_unseen_tokens_get_floor_allocation(table, counts):
    enc = fit_transform_code(table, bits_per_weight=1.0, token_counts=counts, floor_bits=0.25)
    unseen = np.flatnonzero(counts == 0)
    floor_cls = set(enc.class_ids[unseen].tolist())
    assert len(floor_cls) == 1  # one floor class holding exactly the unseen rows
    (fc,) = floor_cls
    assert np.array_equal(np.flatnonzero(enc.class_ids == fc), unseen)
    floor_bits = enc.meta["class_bits_per_weight"][fc]
    assert floor_bits >= 0.25 - 1e-9
    x = enc.decode()
    # the unseen rows are coded, not just replaced by their mean
    assert rel(x[unseen], table[unseen]) < 0.95
    # and frequent rows are coded better than unseen ones
    top = np.argsort(-counts)[:64]
    assert rel(x[top], table[top]) < rel(x[unseen], table[unseen])


def test_error_decreases_with_budget(table, counts):
    errs = [
        rel(fit_transform_code(table, bits_per_weight=b, token_counts=counts).decode(), table)
        for b in (0.5, 1.0, 2.0, 4.0)
    ]
    assert all(e1 > e2 for e1, e2 in zip(errs, errs[1:], strict=False)), errs
    assert errs[-1] < 0.25


def test_sensitivity_metric_shifts_error(table):
    # a metric that weights the last axis heavily: its error must drop
    m = np.eye(D)
    m[-1, -1] = 1e4
    plain = fit_transform_code(table, bits_per_weight=1.0).decode()
    sens = fit_transform_code(table, bits_per_weight=1.0, sensitivity=m).decode()
    e_plain = np.abs(plain[:, -1] - table[:, -1]).mean()
    e_sens = np.abs(sens[:, -1] - table[:, -1]).mean()
    assert e_sens < e_plain


def test_row_gain_and_save_load(table, counts, tmp_path):
    enc = fit_transform_code(table, bits_per_weight=1.5, token_counts=counts, row_scale=True)
    assert enc.row_gain is not None and enc.nbytes() <= int(1.5 * V * D / 8)
    enc.save(tmp_path / "t.safetensors")
    back = load_transform_code(tmp_path / "t.safetensors")
    np.testing.assert_array_equal(back.decode(), enc.decode())
    assert back.nbytes() == enc.nbytes()


def test_logit_bias_removes_the_common_part_of_the_head_error(table, counts, tmp_path):
    """head_mean: logit_bias b_v = mu . e_v, inside the budget; with head inputs h = mu +
    noise the tied head's logit error h . e_v - b_v is smaller than without it."""
    rng = np.random.default_rng(3)
    mu = rng.standard_normal(D) * 2.0
    enc = fit_transform_code(table, bits_per_weight=1.5, token_counts=counts, head_mean=mu)
    assert enc.logit_bias.shape == (V,) and enc.logit_bias.dtype == np.float16
    assert enc.nbytes() <= int(1.5 * V * D / 8)
    assert enc.nbytes() == sum(a.nbytes for a in enc.arrays().values())
    e = table.astype(np.float64) - enc.decode()
    h = mu + 0.5 * rng.standard_normal((200, D))
    err = h @ e.T  # (positions, V) logit errors
    fixed = err - enc.logit_bias.astype(np.float64)
    assert (fixed**2).mean() < 0.5 * (err**2).mean()
    enc.save(tmp_path / "b.safetensors")
    back = load_transform_code(tmp_path / "b.safetensors")
    np.testing.assert_array_equal(back.logit_bias, enc.logit_bias)


def test_logit_scale_fits_the_head_where_tokens_compete(table, counts, tmp_path):
    """head_states: logit_scale a_v (tt_ops/head_gain.py) on the coded part of each row, inside
    the budget; it lowers the probability-weighted logit error sum_t p_tv (h_t . m_v + a_v h_t .
    (x^_v - m_v) - h_t . x_v)^2 (m_v: the row's class mean); with head_mean the bias is taken
    after it; both survive save/load."""
    rng = np.random.default_rng(4)
    mu = rng.standard_normal(D)
    h = mu + rng.standard_normal((300, D))
    budget = int(1.5 * V * D / 8)
    enc = fit_transform_code(table, byte_budget=budget, token_counts=counts, head_states=h)
    assert enc.logit_scale.shape == (V,) and enc.logit_scale.dtype == np.float16
    assert enc.logit_bias is None and enc.nbytes() <= budget
    assert enc.nbytes() == sum(a.nbytes for a in enc.arrays().values())
    lt = h @ table.astype(np.float64).T
    p = np.exp(lt - lt.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    m = enc.means.astype(np.float64)[enc.class_ids.astype(np.int64)]
    lm, lu = h @ m.T, h @ enc.decode().astype(np.float64).T
    a = enc.logit_scale.astype(np.float64)
    assert (p * (lm + a * (lu - lm) - lt) ** 2).sum() < (p * (lu - lt) ** 2).sum()
    both = fit_transform_code(
        table, byte_budget=budget, token_counts=counts, head_states=h, head_mean=mu
    )
    assert both.nbytes() <= budget
    m = both.means.astype(np.float64)[both.class_ids.astype(np.int64)]
    head = m + both.logit_scale.astype(np.float64)[:, None] * (both.decode() - m)
    np.testing.assert_allclose(both.logit_bias, (table - head) @ mu, rtol=2e-3, atol=2e-3)
    both.save(tmp_path / "s.safetensors")
    back = load_transform_code(tmp_path / "s.safetensors")
    np.testing.assert_array_equal(back.logit_scale, both.logit_scale)
    np.testing.assert_array_equal(back.logit_bias, both.logit_bias)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"bits_per_weight": 0}, "bits_per_weight"),
        ({"bits_per_weight": float("nan")}, "bits_per_weight"),
        ({}, "bits_per_weight"),
        ({"bits_per_weight": 1, "byte_budget": 10}, "byte_budget"),
        ({"byte_budget": -5}, "byte_budget"),
        ({"byte_budget": 100}, "byte_budget"),  # too small for the side information
        ({"bits_per_weight": 1, "token_counts": np.ones(3)}, "token_counts"),
        ({"bits_per_weight": 1, "token_counts": -np.ones(V)}, "token_counts"),
        ({"bits_per_weight": 1, "sensitivity": np.eye(3)}, "sensitivity"),
        ({"bits_per_weight": 1, "floor_bits": -1}, "floor_bits"),
        ({"bits_per_weight": 1, "basis_bits": 4}, "basis_bits"),
        ({"bits_per_weight": 1, "class_scale": [-1.0]}, "class_scale"),
        ({"bits_per_weight": 1, "max_bits": 9}, "max_bits"),
        ({"bits_per_weight": 1, "head_mean": np.ones(3)}, "head_mean"),
        ({"bits_per_weight": 1, "head_states": np.ones((4, 3))}, "head_states"),
    ],
)
def test_bad_input_raises_value_error(table, kwargs, name):
    with pytest.raises(ValueError, match=name):
        fit_transform_code(table, **kwargs)


@pytest.mark.parametrize("bad", [np.zeros(5), np.full((4, 3), np.nan), np.zeros((4, 3), int)])
def test_bad_table_raises(bad):
    with pytest.raises(ValueError, match="table"):
        fit_transform_code(bad, bits_per_weight=1)


@pytest.mark.parametrize("sample", [None, 3000])  # 3000: codebooks fitted on drawn values
def test_fit_in_chunks_of_rows_is_the_whole_table_fit(table, counts, monkeypatch, sample):
    """Issue 17: the fit reads the table in chunks of rows; any chunking gives the same code,
    byte for byte, as one chunk of all rows (the arithmetic of the fit that held the whole
    table: checked against it on GPT-2-small and SmolLM2 tables, docs/results.md)."""
    import tensorgpt.tt_ops.transform_fit as fit

    if sample:
        monkeypatch.setattr(fit, "SAMPLE", sample)
    rng = np.random.default_rng(5)
    metric = rng.standard_normal((D, D))
    kwargs = dict(bits_per_weight=2.5, token_counts=counts, sensitivity=metric @ metric.T / D)
    whole = fit_transform_code(table, chunk_rows=V, **kwargs).arrays()
    for rows in (97, 512):  # chunks that split classes and bytes of the packed planes unevenly
        chunked = fit_transform_code(table, chunk_rows=rows, **kwargs).arrays()
        assert chunked.keys() == whole.keys()
        assert all(np.array_equal(chunked[k], whole[k]) for k in whole), rows


def test_decode_by_chunks_is_the_whole_table_decode(table, counts, monkeypatch):
    """Issue 17: decode() and decode_rows() build rows from their own codes (no (V, K)
    coefficients); the values are the whole-table decode's, bit for bit, for chunks that
    split classes and the bytes of the packed planes, and the chunked metrics are the
    whole-table metrics (export/compress.py measures a 7B table this way)."""
    import tensorgpt.tt_ops.transform_code as tc
    from tensorgpt.tt_ops.metrics import table_metrics

    enc = fit_transform_code(table, bits_per_weight=2.5, token_counts=counts, row_scale=True)
    assert enc.row_gain is not None
    y = enc.coefficients()
    whole = y @ enc.basis.astype(np.float32)  # the decode that held every coefficient
    whole *= enc.row_gain.astype(np.float32)[:, None]
    whole += enc.means.astype(np.float32)[enc.class_ids.astype(np.int64)]
    for start, stop in ((0, 1), (5, 37), (97, 600), (V - 3, V)):
        assert np.array_equal(enc.coefficients(start, stop), y[start:stop])
    monkeypatch.setattr(tc, "DECODE_CHUNK_ROWS", 97)
    assert np.array_equal(enc.decode(), whole)
    assert table_metrics(table, enc.decode_rows, 97) == table_metrics(table, whole, 97)


def test_head_fix_in_chunks_is_the_float64_formula(table, counts):
    """The gain and bias are computed with float32 whole-table arrays and float64 chunks of
    rows (a 262k-row table would otherwise hold three float64 copies): the stored fp16 values
    are those of the float64 formula over the whole table, for any chunking."""
    rng = np.random.default_rng(6)
    mu = rng.standard_normal(D)
    h = mu + rng.standard_normal((200, D))
    kwargs = dict(bits_per_weight=1.5, token_counts=counts, head_states=h, head_mean=mu)
    enc = fit_transform_code(table, chunk_rows=V, **kwargs)
    m = enc.means.astype(np.float64)[enc.class_ids.astype(np.int64)]
    head = m + enc.logit_scale.astype(np.float64)[:, None] * (enc.decode().astype(np.float64) - m)
    np.testing.assert_array_equal(
        enc.logit_bias, ((table.astype(np.float64) - head) @ mu).astype(np.float16)
    )
    chunked = fit_transform_code(table, chunk_rows=97, **kwargs)
    np.testing.assert_array_equal(chunked.logit_scale, enc.logit_scale)
    np.testing.assert_array_equal(chunked.logit_bias, enc.logit_bias)
