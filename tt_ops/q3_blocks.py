"""3-bit weight blocks for `--quantize q3` (numpy): the q4 pattern with 8 levels instead of 16.

Per block of 32 along the contraction axis K and per output column, an fp16 scale d and an
fp16 minimum m, and codes q in 0..7: w ~ float(q) * float(d) + float(m). 3 + 2 * 16 / 32 =
4.0 bits per weight (q4: 5.0). This is our own layout, not llama.cpp's Q3_K (symmetric codes,
6-bit scales per 16 weights under one fp16 scale per 256: 3.44 bits per weight), which needs
super-blocks of 256 along K and a decode of 6-bit scales; the block-32 scale and minimum keep
the decode the same few ops as q4 (export/weight_blocks.py).

Codes are split into bit planes, as Q3_K does (`qs` + `hmask`), so the decode is shifts and
masks on whole bytes:

    low  (K/32, 8, N) uint8: byte j holds the low 2 bits of element j + 8 s in bits 2s, 2s+1
    high (K/32, 4, N) uint8: byte j holds bit 2 of element j + 4 s in bit s (s = 0..7)

Encoding: with 8 levels the min/max grid wastes levels on outliers, so each block tries a few
clipped ranges [min + a r, max - b r] (r = max - min, a and b in CLIPS), then refits d and m
by least squares for the codes found, and keeps whichever of all these has the smallest
squared error (the decode's own fp16 rounding included). Deterministic, no randomness.
"""

from __future__ import annotations

import numpy as np

from tensorgpt.tt_ops.q4_grid import block_codes, decode_blocks

Q3_BLOCK = 32
LEVELS = 8
CLIPS = (0.0, 0.05, 0.1, 0.15)  # fractions of the block's range clipped at either end


def _codes(blocks: np.ndarray, d: np.ndarray, m: np.ndarray) -> np.ndarray:
    return block_codes(blocks, d, m, LEVELS)


def fit_q3_blocks(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """blocks (B, S, N) float32 (S = 32, or a multiple of it for a larger block sharing one
    scale and minimum) -> codes (B, S, N) uint8 in 0..7, d and m (B, N) fp16."""
    blocks = np.asarray(blocks, dtype=np.float32)
    low, high = blocks.min(axis=1), blocks.max(axis=1)
    span = high - low
    best = None
    for a in CLIPS:
        for b in CLIPS:
            lo, hi = low + a * span, high - b * span
            d = ((hi - lo) / (LEVELS - 1)).astype(np.float16)
            m = lo.astype(np.float16)
            q = _codes(blocks, d, m)
            candidates = [(q, d, m)]
            # least-squares d, m for these codes: w ~ d q + m over the block's 32 values
            qf = q.astype(np.float32)
            n = np.float32(blocks.shape[1])
            sq, sw = qf.sum(1), blocks.sum(1)
            sqq, sqw = (qf * qf).sum(1), (qf * blocks).sum(1)
            det = n * sqq - sq * sq
            ok = det > 0
            safe = np.where(ok, det, 1.0)
            d_ls = np.where(ok, (n * sqw - sq * sw) / safe, d.astype(np.float32))
            m_ls = np.where(ok, (sqq * sw - sq * sqw) / safe, m.astype(np.float32))
            d_ls, m_ls = d_ls.astype(np.float16), m_ls.astype(np.float16)
            candidates.append((_codes(blocks, d_ls, m_ls), d_ls, m_ls))
            for cq, cd, cm in candidates:
                err = np.square(decode_blocks(cq, cd, cm) - blocks).sum(1)
                if best is None:
                    best = [err, cq, cd, cm]
                    continue
                win = err < best[0]
                best[0] = np.where(win, err, best[0])
                best[1] = np.where(win[:, None, :], cq, best[1])
                best[2] = np.where(win, cd, best[2])
                best[3] = np.where(win, cm, best[3])
    return best[1], best[2], best[3]


def pack_q3_codes(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """codes (K/32, 32, N) in 0..7 -> low (K/32, 8, N), high (K/32, 4, N) uint8 planes."""
    q = np.asarray(q, dtype=np.uint8)
    nb, _, n = q.shape
    low = np.zeros((nb, 8, n), np.uint8)
    high = np.zeros((nb, 4, n), np.uint8)
    for s in range(4):
        low |= (q[:, 8 * s : 8 * s + 8] & 3) << (2 * s)
    for s in range(8):
        high |= ((q[:, 4 * s : 4 * s + 4] >> 2) & 1) << s
    return low, high


def encode_q3_blocks(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(K, N) float, K a multiple of 32 -> low (K/32, 8, N), high (K/32, 4, N) uint8 planes,
    scale and minimum (K/32, N) float16 (module docstring)."""
    w = np.asarray(w, dtype=np.float32)
    if w.ndim != 2 or w.shape[0] % Q3_BLOCK:
        raise ValueError(f"q3 blocks need a (K, N) weight with K a multiple of 32, got {w.shape}")
    k, n = w.shape
    q, d, m = fit_q3_blocks(w.reshape(k // Q3_BLOCK, Q3_BLOCK, n))
    return (*pack_q3_codes(q), d, m)


def decode_q3_blocks(
    low: np.ndarray, high: np.ndarray, scale: np.ndarray, minimum: np.ndarray
) -> np.ndarray:
    """The exact arithmetic of the ONNX decode (export/quantizers/q3.py): (K, N) float32."""
    nb, _, n = low.shape
    lo = np.concatenate([(low >> (2 * s)) & 3 for s in range(4)], axis=1)
    hi = np.concatenate([(high >> s) & 1 for s in range(8)], axis=1)
    q = lo + (hi << 2)
    return decode_blocks(q, scale, minimum).reshape(nb * Q3_BLOCK, n)
