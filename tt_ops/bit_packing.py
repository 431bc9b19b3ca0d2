"""Flat little-endian bit packing of small unsigned codes (numpy), as transform coding stores
its code planes and class ids: value k of a plane of width w sits in byte k*w//8 at bit
(k*w)%8."""

from __future__ import annotations

import numpy as np

# The planes a b-bit code is split into: the binary digits of b (b = 8 is one plane of 8).
PLANES = {b: [w for w in (4, 2, 1) if b & w] if b < 8 else [8] for b in range(1, 9)}


def pack_bits(values: np.ndarray, width: int) -> np.ndarray:
    """Pack non-negative ints < 2**width (width in 1, 2, 4, 8) flat, little-endian in bytes."""
    v = np.asarray(values, dtype=np.uint8).reshape(-1)
    if width == 8:
        return v.copy()
    per = 8 // width
    pad = (-v.size) % per
    v = np.concatenate([v, np.zeros(pad, np.uint8)]).reshape(-1, per)
    shifts = (np.arange(per, dtype=np.uint8) * width).astype(np.uint8)
    return np.bitwise_or.reduce(v << shifts, axis=1).astype(np.uint8)


def unpack_bits(packed: np.ndarray, width: int, count: int) -> np.ndarray:
    p = np.asarray(packed, dtype=np.uint8).reshape(-1)
    if width == 8:
        return p[:count].copy()
    per = 8 // width
    shifts = (np.arange(per, dtype=np.uint8) * width).astype(np.uint8)
    mask = np.uint8((1 << width) - 1)
    return ((p[:, None] >> shifts) & mask).reshape(-1)[:count]
