"""Row importance that holds outside the calibration text (tt_ops/row_prior.py)."""

from __future__ import annotations

import numpy as np
import pytest

from tensorgpt.tt_ops.row_prior import row_importance, tokenizer_prior, unseen_mass
from tensorgpt.tt_ops.transform_fit import fit_transform_code


def test_tokenizer_prior_is_a_decreasing_distribution():
    p = tokenizer_prior(1000)
    assert p.shape == (1000,) and np.isclose(p.sum(), 1.0)
    assert (p > 0).all() and (np.diff(p) < 0).all()


def test_default_mixture_gives_every_row_mass():
    V = 300
    mass = np.zeros(V)
    mass[:10] = 5.0  # the model "emits" only ten tokens
    w, pis = row_importance(V, model_mass=mass)
    assert pis == {"tokenizer": 0.5, "model": 0.5}
    assert np.isclose(w.sum(), 1.0) and (w > 0).all()
    assert np.allclose(w[10:], 0.5 * tokenizer_prior(V)[10:])


def test_user_text_gets_all_but_the_good_turing_unseen_mass():
    V = 200
    counts = np.zeros(V)
    counts[:50] = 4.0
    counts[50:60] = 1.0  # 10 singletons among N = 210 tokens
    p0 = unseen_mass(counts)
    assert p0 == pytest.approx(10 / 210)
    w, pis = row_importance(V, model_mass=np.ones(V), user_counts=counts)
    assert pis["user"] == pytest.approx(1 - p0, abs=1e-6)
    assert pis["model"] == pytest.approx(p0 / 2, abs=1e-6)
    assert (w[60:] > 0).all() and np.isclose(w.sum(), 1.0)
    # rows the user's text shows weigh more than rows it does not
    assert w[:50].min() > w[60:].max()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"model_mass": np.ones(5)}, "expected 10 entries"),
        ({"model_mass": -np.ones(10)}, "non-negative"),
        ({"user_counts": np.zeros(10)}, "positive sum"),
    ],
)
def test_bad_sources_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        row_importance(10, **kwargs)


def test_rows_a_calibration_text_lacks_keep_their_quality():
    """With raw counts of one text, rows the text never shows fall to the floor class; with
    the text-free mixture they are coded by their prior weight. Same byte budget."""
    rng = np.random.default_rng(0)
    V, D = 1024, 32
    table = rng.standard_normal((V, D)) * np.linspace(2.0, 0.5, D)
    counts = np.zeros(V)
    counts[:200] = rng.integers(1, 50, 200)  # the calibration text shows 200 tokens
    unseen = np.arange(200, 400)  # frequent by the prior (low ids), absent from the text

    def unseen_error(weights):
        dec = fit_transform_code(table, bits_per_weight=3.0, token_counts=weights).decode()
        return np.linalg.norm(dec[unseen] - table[unseen]) / np.linalg.norm(table[unseen])

    w, _ = row_importance(V, model_mass=np.ones(V))
    assert unseen_error(w) < 0.8 * unseen_error(counts)
