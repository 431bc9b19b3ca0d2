"""Per-row gain of a tied head's logits, fitted where each token competes as an output (issue 19).

A coded table x^ replaces the tied head's rows x, so the logit of token v at a position with
head input h moves from l = h . x_v to u = h . x^_v. One number per row, a_v, multiplies the
part of u that the code carries beyond a fixed anchor row m_v (the row's class mean, which
every row of a class shares; zero: the whole logit):

    logit_v = h . m_v + a_v h . (x^_v - m_v)
    a_v = argmin_a sum_t p_tv (a r_tv - (l_tv - h_t . m_v))^2,   r_tv = h_t . (x^_v - m_v)

over calibration positions t, with p_tv the original model's predicted probability of v there:
the output-side Gauss-Newton weight of logit v (the cross-entropy's curvature in that logit),
so the fit counts a row's error only where the model actually puts mass on that token -- where
a wrong logit changes the loss. A plain mean over positions (the uniform logit bias,
transform_fit.py head_mean) weights every position alike and removes much less (measured in
docs/quality_notes.md, "Head bias").

The statistics are sums over positions, chunked so that at most `chunk` x V logits are held
(fewer for a large vocabulary: about 2**24 values per array, 64 MB in float32).
"""

from __future__ import annotations

import numpy as np


def head_logit_gain(
    table,
    decoded,
    head_states,
    *,
    anchor=None,
    logit_multiplier: float = 1.0,
    softcap: float | None = None,
    chunk: int = 256,
) -> np.ndarray:
    """(V,) float64 gains a_v (1 where token v never gets probability mass, or u = 0).

    table, decoded: (V, D) original and coded rows of the tied head.
    head_states: (T, D) the head's inputs h_t at T calibration positions (text the model
        generated, or a calibration text; never an evaluation text).
    anchor: optional (V, D) rows m_v the gain leaves alone (the class means of a transform
        code: with the whole logit scaled, a low-rate row that decodes to about its class
        mean scales the class's common logit on text of another domain, which broke 24x).
    logit_multiplier, softcap: what the model does to h . x before the softmax (a logit
        scale or 1 / divisor, then softcap * tanh(. / softcap)), so p_tv is the model's own
        distribution; the gain itself multiplies the raw product h . x^ (before them).
    """
    x = np.asarray(table, dtype=np.float32)
    xd = np.asarray(decoded, dtype=np.float32)
    h = np.asarray(head_states, dtype=np.float32)
    if x.ndim != 2 or xd.shape != x.shape:
        raise ValueError(f"decoded: expected the table's shape {x.shape}, got {xd.shape}")
    if h.ndim != 2 or h.shape[1] != x.shape[1] or h.shape[0] < 1:
        raise ValueError(f"head_states: expected (T >= 1, {x.shape[1]}), got {h.shape}")
    if not (np.isfinite(h).all() and np.isfinite(xd).all()):
        raise ValueError("head_states / decoded: expected finite values")
    if not (np.isfinite(logit_multiplier) and logit_multiplier > 0):
        raise ValueError(f"logit_multiplier: must be > 0, got {logit_multiplier}")
    if softcap is not None and not softcap > 0:
        raise ValueError(f"softcap: must be > 0, got {softcap}")
    if chunk < 1:
        raise ValueError(f"chunk: must be >= 1, got {chunk}")
    m = None
    if anchor is not None:
        m = np.asarray(anchor, dtype=np.float32)
        if m.shape != x.shape or not np.isfinite(m).all():
            raise ValueError(f"anchor: expected finite rows of shape {x.shape}, got {m.shape}")
    num = np.zeros(x.shape[0])
    den = np.zeros(x.shape[0])
    chunk = max(1, min(chunk, (1 << 24) // x.shape[0]))
    for s in range(0, h.shape[0], chunk):
        hb = h[s : s + chunk]
        lt = hb @ x.T  # (t, V) original raw logits
        z = lt * np.float32(logit_multiplier)
        if softcap is not None:
            z = np.float32(softcap) * np.tanh(z / np.float32(softcap))
        z -= z.max(1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(1, keepdims=True)
        lu = hb @ xd.T  # (t, V) decoded raw logits
        if m is not None:  # both relative to the anchor's logit
            lm = hb @ m.T
            lu -= lm
            lt -= lm
        pu = p * lu
        num += (pu * lt).sum(0, dtype=np.float64)
        den += (pu * lu).sum(0, dtype=np.float64)
    tiny = 1e-30 * max(float(den.max(initial=0.0)), 1e-30)
    return np.where(den > tiny, num / np.maximum(den, tiny), 1.0)
