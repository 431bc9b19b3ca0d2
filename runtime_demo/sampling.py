"""Next-token choice: greedy, or temperature / top-k / top-p sampling with a seeded numpy Generator.

The filters apply in the order HF's generate uses (temperature, then top-k, then top-p), so a
setting means the same thing here as in transformers. Probabilities are computed in float64:
the float32 logits' softmax over a 50k vocabulary loses the tail otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SamplingConfig:
    """temperature 0 means greedy (argmax); top_k 0 and top_p 1.0 mean no filtering."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if not np.isfinite(self.temperature) or self.temperature < 0:
            raise ValueError(f"--temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"--top-k must be >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"--top-p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


class Sampler:
    """Picks one token per row of a (batch, vocab) logits array."""

    def __init__(self, config: SamplingConfig) -> None:
        self.config = config
        # One Generator per generation run: the same seed gives the same tokens.
        self.rng = np.random.default_rng(config.seed)

    def __call__(self, logits: np.ndarray) -> np.ndarray:
        if self.config.greedy:
            return np.argmax(logits, axis=-1).astype(np.int64)
        probs = filtered_probs(logits, self.config)
        return _draw(probs, self.rng)


def filtered_probs(logits: np.ndarray, config: SamplingConfig) -> np.ndarray:
    """Softmax of logits / temperature with top-k and top-p masked to 0, rows sum to 1."""
    scores = logits.astype(np.float64) / config.temperature
    vocab = scores.shape[-1]
    if 0 < config.top_k < vocab:
        # Keep the k largest; ties at the k-th value stay in (as HF's `< kth value` test does).
        kth = np.partition(scores, vocab - config.top_k, axis=-1)[:, vocab - config.top_k]
        scores = np.where(scores < kth[:, None], -np.inf, scores)
    probs = _softmax(scores)
    if config.top_p < 1.0:
        probs = _top_p(probs, config.top_p)
    return probs


def _softmax(scores: np.ndarray) -> np.ndarray:
    shifted = scores - scores.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def _top_p(probs: np.ndarray, top_p: float) -> np.ndarray:
    """Keep the smallest set of most likely tokens whose mass reaches top_p (at least one)."""
    order = np.argsort(-probs, axis=-1, kind="stable")
    sorted_probs = np.take_along_axis(probs, order, axis=-1)
    # A token stays if the mass *before* it is still below top_p: the first always stays.
    mass_before = np.cumsum(sorted_probs, axis=-1)
    mass_before = np.concatenate([np.zeros_like(mass_before[:, :1]), mass_before[:, :-1]], axis=1)
    keep_sorted = mass_before < top_p
    keep = np.zeros_like(keep_sorted)
    np.put_along_axis(keep, order, keep_sorted, axis=-1)
    kept = np.where(keep, probs, 0.0)
    return kept / kept.sum(axis=-1, keepdims=True)


def _draw(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Inverse-CDF draw per row: one uniform number per row, so a seed fixes the sequence."""
    cdf = np.cumsum(probs, axis=-1)
    u = rng.random(probs.shape[0]) * cdf[:, -1]
    picks = np.array([np.searchsorted(row, x, side="right") for row, x in zip(cdf, u)])
    # side="right" never lands on a zero-probability token, except past the end when rounding
    # makes u equal the total: then take the last token that has any mass.
    last_nonzero = probs.shape[-1] - 1 - np.argmax(probs[:, ::-1] > 0, axis=-1)
    return np.minimum(picks, last_nonzero).astype(np.int64)
