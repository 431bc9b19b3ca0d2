"""Find the 4-bit grid a block of weights already lies on, so `--quantize q4` keeps it exactly.

Our q4 block (tt_ops/row_codecs.py; its ONNX decode is export/weight_blocks.py) decodes w = float(q) * float(d) + float(m), q in 0..15,
d and m fp16. A GGUF source dequantized by transformers lies on such a grid block by block:

    Q4_1   w = d * q + m          (llama.cpp's m is the block minimum, d = (max - min) / 15)
    Q4_0   w = d * (q - 8)        (d = -max|w| / 8: the codes need not span 0..15)

Two candidates per block of 32 (along the input axis, per output column), the first that
reproduces every value bit for bit wins:

    min/max   m = min, d = (max - min) / 15            (Q4_1, and any block spanning 16 codes)
    gap       d = +-(the smallest gap between distinct values), m = min - j * d (d > 0) or
              max + j * |d| (d < 0) for the first j >= 0 that keeps the codes in 0..15 and m
              exact in fp16 (Q4_0: d < 0 and m = max = -8d when max|w| is positive)

A block on neither is rounded to nearest on the min/max grid (as an fp32 source always is;
Q4_K's 6-bit sub-scales times an fp16 scale, Q5_0, Q6_K and Q8_0 have more levels or scales
fp16 cannot hold). Every candidate is checked with the decode's own arithmetic, so "exact"
means bit-identical to the source's dequantized weights.
"""

from __future__ import annotations

import numpy as np

LEVELS = 16


def decode_blocks(q: np.ndarray, d: np.ndarray, m: np.ndarray) -> np.ndarray:
    """q (B, 32, N) codes, d and m (B, N) fp16 -> (B, 32, N) float32, as the ONNX decode does
    (d * q + m: the arithmetic of every block grid here, q4 and q3)."""
    return (
        q.astype(np.float32) * d.astype(np.float32)[:, None, :] + m.astype(np.float32)[:, None, :]
    )


def block_codes(
    blocks: np.ndarray, d: np.ndarray, m: np.ndarray, levels: int = LEVELS
) -> np.ndarray:
    """Nearest codes in 0..levels-1 of (B, 32, N) blocks on the grid d * q + m."""
    d32 = d.astype(np.float32)[:, None, :]
    safe = np.where(d32 == 0, 1.0, d32)
    q = np.rint((blocks - m.astype(np.float32)[:, None, :]) / safe)
    return np.clip(q, 0, levels - 1).astype(np.uint8)


def _fp16_exact(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return np.isfinite(x) & (x.astype(np.float16).astype(np.float32) == x)


def fit_q4_grid(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """blocks (B, 32, N) float32 -> codes (B, 32, N) uint8, d and m (B, N) fp16, and exact
    (B, N) bool: True where the decoded block equals the input bit for bit."""
    blocks = np.asarray(blocks, dtype=np.float32)
    low, high = blocks.min(axis=1), blocks.max(axis=1)
    d = ((high - low) / (LEVELS - 1)).astype(np.float16)
    m = low.astype(np.float16)
    q = block_codes(blocks, d, m)
    exact = (decode_blocks(q, d, m) == blocks).all(axis=1)
    if exact.all():
        return q, d, m, exact

    # gap candidates, for the blocks min/max did not reproduce: codes counted up from the
    # minimum (d > 0) or down from the maximum (d < 0, llama.cpp's Q4_0 when max|w| is positive)
    values = np.sort(blocks, axis=1)
    steps = np.diff(values, axis=1)
    gap = np.where(steps > 0, steps, np.inf).min(axis=1)  # (B, N); inf for a constant block
    span = np.rint((high - low) / np.where(np.isfinite(gap), gap, 1.0))
    usable = np.isfinite(gap) & _fp16_exact(gap) & (span <= LEVELS - 1)
    gap = np.where(usable, gap, 0.0)  # the others never take a candidate: keep them finite
    for sign, base in ((1.0, low), (-1.0, high)):
        todo = usable & ~exact
        if not todo.any():
            break
        m_gap = np.full_like(low, np.nan)
        for j in range(LEVELS):
            candidate = (base - np.float32(sign * j) * gap).astype(np.float32)
            take = todo & np.isnan(m_gap) & (j <= LEVELS - 1 - span) & _fp16_exact(candidate)
            m_gap = np.where(take, candidate, m_gap)
        todo &= ~np.isnan(m_gap)
        d_gap = np.where(todo, sign * gap, 0).astype(np.float16)
        m_gap = np.where(todo, m_gap, 0).astype(np.float16)
        q_gap = block_codes(blocks, d_gap, m_gap)
        wins = todo & (decode_blocks(q_gap, d_gap, m_gap) == blocks).all(axis=1)
        q = np.where(wins[:, None, :], q_gap, q)
        d, m, exact = np.where(wins, d_gap, d), np.where(wins, m_gap, m), exact | wins
    return q, d, m, exact
