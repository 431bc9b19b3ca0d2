"""tt_ops/head_gain.py: the p-weighted least-squares gain of the tied head's logits."""

import numpy as np
import pytest

from tensorgpt.tt_ops.head_gain import head_logit_gain


def _setup(seed=0, V=40, D=8, T=64):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((V, D)), rng.standard_normal((T, D))


def test_a_uniformly_shrunk_row_gets_its_exact_inverse_gain():
    """x^_v = x_v / s_v -> u = l / s_v at every position, so a_v = s_v exactly (any weights)."""
    x, h = _setup()
    s = np.linspace(0.5, 2.0, len(x))
    a = head_logit_gain(x, x / s[:, None], h)
    np.testing.assert_allclose(a, s, rtol=1e-4)


def test_the_gain_is_the_probability_weighted_least_squares_fit():
    x, h = _setup(1)
    rng = np.random.default_rng(2)
    xd = x + 0.3 * rng.standard_normal(x.shape)
    a = head_logit_gain(x, xd, h, chunk=7)  # chunking does not change the sums
    lt, lu = h @ x.T, h @ xd.T
    p = np.exp(lt - lt.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    ref = (p * lu * lt).sum(0) / (p * lu * lu).sum(0)
    np.testing.assert_allclose(a, ref, rtol=1e-4)
    # it is the minimiser: nudging any gain raises that row's weighted error
    err = lambda g: (p * (g * lu - lt) ** 2).sum(0)  # noqa: E731
    assert (err(a) <= err(a * 1.01) + 1e-9).all() and (err(a) <= err(a * 0.99) + 1e-9).all()


def test_an_anchor_is_left_alone_and_only_the_rest_is_scaled():
    """x^ = m + (x - m) / s: the part beyond the anchor m is shrunk by s, so a_v = s_v exactly,
    where the whole-logit gain (no anchor) is not s_v."""
    x, h = _setup(5)
    m = np.random.default_rng(6).standard_normal(x.shape)
    s = np.linspace(0.6, 1.8, len(x))
    xd = m + (x - m) / s[:, None]
    np.testing.assert_allclose(head_logit_gain(x, xd, h, anchor=m), s, rtol=1e-3)
    assert not np.allclose(head_logit_gain(x, xd, h), s, rtol=1e-2)


def test_rows_without_signal_keep_gain_one_and_quirks_change_the_weights():
    x, h = _setup(3)
    xd = x.copy()
    xd[5] = 0.0  # u = 0 everywhere: nothing to fit
    a = head_logit_gain(x, xd * 0.8, h)
    assert a[5] == 1.0
    b = head_logit_gain(x, xd * 0.8 + 0.01, h, logit_multiplier=0.1, softcap=2.0)
    assert b.shape == a.shape and not np.allclose(a, b)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"decoded": np.zeros((3, 8))}, "decoded"),
        ({"head_states": np.zeros((4, 5))}, "head_states"),
        ({"logit_multiplier": 0.0}, "logit_multiplier"),
        ({"softcap": -1.0}, "softcap"),
        ({"chunk": 0}, "chunk"),
        ({"anchor": np.zeros((3, 8))}, "anchor"),
    ],
)
def test_bad_input_raises_value_error(kwargs, name):
    x, h = _setup()
    args = {"table": x, "decoded": x, "head_states": h, **kwargs}
    with pytest.raises(ValueError, match=name):
        head_logit_gain(**args)
