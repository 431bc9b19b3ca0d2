"""Step 3 of transform coding: bits per (class, axis) by reverse water-filling (numpy).

Greedy marginal allocation minimising sum_c W_c sum_i lambda_ci d(b_ci) (W_c weighted class
energy, d = Lloyd-Max distortion of a unit Gaussian) under a budget in bits that counts every
byte the file will hold (codes, axis indices, codebooks, basis rows, scales).
"""

from __future__ import annotations

import numpy as np

from tensorgpt.tt_ops.bit_packing import PLANES

# Distortion of the Lloyd-Max quantizer of a unit Gaussian with b bits (b = 0..8).
LLOYD_MAX_D = np.array(
    [1.0, 0.3634, 0.1175, 0.03454, 0.009497, 0.002499, 0.000642, 0.000163, 0.0000411]
)
MAX_BITS = 8


def allocate_bits(
    W: np.ndarray,
    n_c: np.ndarray,
    *,
    budget_bits: int,
    floor_bits: float,
    max_bits: int,
    axis_bits: int,
) -> tuple[np.ndarray, int]:
    """Bits (C, D) per class and axis, and the bits left over for the rest of the budget.

    Every class first gets `floor_bits` per weight (so rare or unseen tokens are never left to
    chance), then the rest of `budget_bits` goes where W_ci (d(b) - d(b+1)) / cost is largest.
    axis_bits: what the first class to use an axis pays for its basis row and scales.
    Returns (bits, avail) where avail < 0 means the floor alone does not fit.
    """
    C, D = W.shape
    d = LLOYD_MAX_D[: max_bits + 1]
    bits = np.zeros((C, D), dtype=np.int64)
    for c in range(C):  # floor: every class gets floor_bits per weight first
        _greedy(
            bits[c : c + 1],
            W[c : c + 1],
            d,
            np.ones(1, np.int64),
            int(floor_bits * D),
            max_bits,
            costs=False,
        )
    spent = _alloc_bits(bits, n_c, axis_bits)
    avail = budget_bits - spent
    if avail >= 0:
        _greedy(bits, W, d, n_c, avail, max_bits, costs=True, axis_bits=axis_bits)
    return bits, avail


def _group_bits(b: int) -> int:
    """Side bits of one (class, bit width) group: fp16 codebook + <= 1 pad byte per plane."""
    return (1 << b) * 16 + 8 * len(PLANES[b])


def _alloc_bits(bits: np.ndarray, n_c: np.ndarray, axis_bits: int) -> int:
    """Bits of an allocation: codes, axis indices, groups, basis rows (+ scales)."""
    tot = int((bits * n_c[:, None]).sum()) + 16 * int((bits > 0).sum())
    tot += axis_bits * int((bits > 0).any(0).sum())
    for c in range(bits.shape[0]):
        for b in np.unique(bits[c][bits[c] > 0]):
            tot += _group_bits(int(b))
    return tot


def _greedy(bits, W, d, n_c, avail_bits, max_bits, costs=True, axis_bits=0):
    """Add one bit at a time where W_ci (d(b) - d(b+1)) / cost is largest (in place).

    With `costs`, cost = n_c + 16 (first bit of (c, i): its int16 axis index) + axis_bits (no
    class uses axis i yet: basis row and scales) + the codebook of a new (class, width) group,
    minus the codebook of a group that the step empties; without, cost = n_c.  Lazy heap:
    entries whose cost changed are re-pushed when popped; when an axis comes into use the
    entries of the other classes are pushed again at the lower cost.
    """
    import heapq

    C, D = bits.shape
    used = (bits > 0).any(0)
    m = np.zeros((C, max_bits + 2), dtype=np.int64)
    for c in range(C):
        m[c] = np.bincount(bits[c], minlength=max_bits + 2)[: max_bits + 2]

    def cost(c, i):
        b = int(bits[c, i])
        if not costs:
            return int(n_c[c])
        k = int(n_c[c]) + (16 if b == 0 else 0) + (0 if used[i] else axis_bits)
        if m[c, b + 1] == 0:
            k += _group_bits(b + 1)
        if b > 0 and m[c, b] == 1:
            k -= _group_bits(b)
        return k

    def push(c, i):
        b = bits[c, i]
        if b < max_bits and W[c, i] > 0:
            k = cost(c, i)
            heapq.heappush(heap, (-W[c, i] * (d[b] - d[b + 1]) / max(k, 1), c, i, b, k))

    heap = []
    for c in range(C):
        for i in range(D):
            push(c, i)
    spent = 0
    while heap:
        _, c, i, b, k = heapq.heappop(heap)
        if bits[c, i] != b:
            continue  # stale
        if cost(c, i) != k:
            push(c, i)  # cost changed: re-rank
            continue
        if spent + k > avail_bits:
            continue  # too expensive now; cheaper increments may still fit
        bits[c, i] += 1
        m[c, b] -= 1
        m[c, b + 1] += 1
        spent += k
        if not used[i]:
            used[i] = True
            for c2 in range(C):
                if c2 != c:
                    push(c2, i)
        push(c, i)
    return spent
