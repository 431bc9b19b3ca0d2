"""Row importance for the transform code that holds outside the calibration text (issue 19).

The coder gives bits to rows by importance (tt_ops/transform_code.py). Raw token counts of one
calibration text make every token that text lacks a zero-weight row, coded at the floor, and a
user whose text is code, chat or another register then loses 20-60% perplexity. Here the
importance is a mixture of normalised token distributions, each from a different source:

    w_v = sum_s pi_s P_s(v),     sum_v P_s(v) = 1,   sum_s pi_s = 1

    P_model  the model's own expected token frequencies: the predicted distributions summed
             over positions of text the model generated (export/generated_calibration.py).
             Every token gets mass, in proportion to how often the model would emit it; this
             is also the head's view (a row competes as an output in proportion to it).
    P_tok    the tokenizer's prior: BPE assigns ids in merge order, i.e. by frequency in the
             tokenizer's training corpus, so P_tok(v) ~ 1 / (v + OFFSET) (Zipf on the id).
             Across wikitext, Python source, licenses and fortunes, ids < 4096 hold 70-79% of
             the tokens of every domain (docs/quality_notes.md), so this prior is domain-neutral.
    P_user   token counts of a user's calibration text (--calib-text), when given.

Mixing rule (no tuned constants): without user text, pi_model = pi_tok = 1/2 (no reason to
prefer either). With a user text of N tokens of which N1 occur once, the Good-Turing estimate
p0 = N1 / N is the probability that the next token of more text like it is one the text never
showed; that mass goes to the text-free mixture and 1 - p0 to the user's counts.
"""

from __future__ import annotations

import numpy as np

OFFSET = 10.0  # Zipf offset: the first ids (bytes, specials) are not the most frequent words


def tokenizer_prior(vocab_size: int) -> np.ndarray:
    """P_tok (V,): Zipf on the token id, normalised to sum 1."""
    if vocab_size < 1:
        raise ValueError(f"vocab_size: must be >= 1, got {vocab_size}")
    p = 1.0 / (np.arange(vocab_size, dtype=np.float64) + OFFSET)
    return p / p.sum()


def _distribution(name: str, x, vocab_size: int) -> np.ndarray:
    v = np.asarray(x, dtype=np.float64).reshape(-1)
    if v.shape[0] != vocab_size:
        raise ValueError(f"{name}: expected {vocab_size} entries, got {v.shape[0]}")
    if not np.isfinite(v).all() or (v < 0).any() or v.sum() <= 0:
        raise ValueError(f"{name}: expected finite non-negative values with a positive sum")
    return v / v.sum()


def unseen_mass(counts) -> float:
    """Good-Turing p0 = N1 / N: probability that the next token of similar text is unseen."""
    c = np.asarray(counts, dtype=np.float64)
    n = float(c.sum())
    if n <= 0:
        return 1.0
    return float(max((c == 1).sum(), 1) / n)


def row_importance(
    vocab_size: int, model_mass=None, user_counts=None
) -> tuple[np.ndarray, dict[str, float]]:
    """Mixture importance w (V,) (sum 1, every entry > 0) and the weight of each source.

    model_mass: (V,) the model's expected token counts on generated text (or None).
    user_counts: (V,) token counts of the user's calibration text (or None).
    """
    parts = {"tokenizer": tokenizer_prior(vocab_size)}
    if model_mass is not None:
        parts["model"] = _distribution("model_mass", model_mass, vocab_size)
    free = {k: 1.0 / len(parts) for k in parts}
    if user_counts is None:
        pis = free
    else:
        parts["user"] = _distribution("user_counts", user_counts, vocab_size)
        p0 = unseen_mass(user_counts)
        pis = {k: p0 * v for k, v in free.items()}
        pis["user"] = 1.0 - p0
    w = sum(pis[k] * parts[k] for k in parts)
    return w, {k: round(float(v), 6) for k, v in pis.items()}
