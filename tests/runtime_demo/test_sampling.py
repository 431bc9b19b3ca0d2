"""Samplers: greedy is argmax, filters keep the right support, a seed fixes the draw."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tensorgpt.runtime_demo.sampling import Sampler, SamplingConfig, filtered_probs

logit_rows = arrays(
    np.float32,
    st.tuples(st.integers(1, 3), st.integers(2, 40)),
    elements=st.floats(-20, 20, width=32),
)


def test_greedy_is_argmax() -> None:
    logits = np.array([[0.1, 3.0, -1.0], [5.0, 4.0, 4.5]], dtype=np.float32)
    assert Sampler(SamplingConfig())(logits).tolist() == [1, 0]


@settings(max_examples=60, deadline=None)
@given(logit_rows, st.integers(0, 50), st.floats(0.05, 1.0), st.floats(0.1, 3.0))
def test_filtered_probs_support(logits: np.ndarray, top_k: int, top_p: float, temp: float) -> None:
    config = SamplingConfig(temperature=temp, top_k=top_k, top_p=top_p)
    probs = filtered_probs(logits, config)
    assert np.allclose(probs.sum(axis=-1), 1.0)
    kept = probs > 0
    # A most likely token always survives (ties may keep either one).
    unfiltered = filtered_probs(logits, SamplingConfig(temperature=temp))
    assert (kept & (unfiltered == unfiltered.max(axis=-1, keepdims=True))).any(axis=-1).all()
    if 0 < top_k < logits.shape[1]:
        kth = np.sort(logits, axis=-1)[:, -top_k]
        assert not (kept & (logits < kth[:, None])).any()
    draws = Sampler(config)(logits)
    assert kept[np.arange(len(logits)), draws].all()


def test_top_p_keeps_smallest_set_reaching_mass() -> None:
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))
    probs = filtered_probs(logits, SamplingConfig(temperature=1.0, top_p=0.75))
    assert (probs[0] > 0).tolist() == [True, True, False, False]
    probs = filtered_probs(logits, SamplingConfig(temperature=1.0, top_p=0.85))
    assert (probs[0] > 0).tolist() == [True, True, True, False]


def test_seeded_sampling_is_reproducible() -> None:
    logits = np.random.default_rng(0).standard_normal((2, 100)).astype(np.float32)
    config = SamplingConfig(temperature=1.0, seed=7)
    a, b = Sampler(config), Sampler(config)
    first = [a(logits).tolist() for _ in range(5)]
    assert first == [b(logits).tolist() for _ in range(5)]
    assert len({tuple(x) for x in first}) > 1  # it does sample


@pytest.mark.parametrize(
    "kwargs", [{"temperature": -1.0}, {"top_k": -1}, {"top_p": 0.0}, {"top_p": 1.5}]
)
def test_bad_sampling_settings(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        SamplingConfig(**kwargs)
