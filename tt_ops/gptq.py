"""Error-compensating quantization onto a block grid (GPTQ, Frantar et al. 2022, arXiv
2210.17323), numpy, for `--quantize mixed` (export/quantizers/mixed.py).

A layer y = x W, W (K, N) (contraction axis K, the layout of export/weight_blocks.py), seen on
calibration inputs X (n, K). Rounding each weight to its nearest grid point minimizes
||W - Q|| but not the output error; GPTQ minimizes

    ||X (W - Q)||^2 = tr((W - Q)^T H (W - Q)),     H = X^T X (K, K)

greedily, one input row k at a time in order: quantize row k, then move every not yet
quantized row so that the output error of that rounding is compensated as well as the rows
left can do it (the optimal brain surgeon update):

    e      = (w_k - q_k) / U[k, k]                  (N,)
    w_j   -= U[k, j] e          for j > k            U: upper Cholesky factor of H^-1,

with H^-1 restricted to the rows not yet quantized, which the Cholesky factor of the full
inverse gives for every k at once. H gets a damping of DAMP x its mean diagonal (inputs that
never vary, and the few positions of a calibration text, leave it singular). Updates are
applied row by row inside a span of LAZY rows and to the rest once per span (the same
arithmetic, cache-friendly).

The grid: blocks of 32 rows of K per output column with an fp16 scale d and minimum m, codes
0..levels-1, w ~ d q + m (tt_ops/q4_grid.py's arithmetic). A block's d and m are fitted by
`fit` when GPTQ reaches the block's first row, on the block's current (already compensated)
values; its rows are then rounded on that grid in order. For a source already on the q4 grid
(a Q4_1 GGUF) the q4 fit reproduces every block and GPTQ changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tensorgpt.tt_ops.q4_grid import block_codes, decode_blocks

BLOCK = 32
DAMP = 0.01  # fraction of H's mean diagonal added to its diagonal
LAZY = 128  # rows updated together (a multiple of BLOCK)

# (blocks (B, 32, N) float32) -> (codes, d (B, N) fp16, m (B, N) fp16)
GridFit = Callable[[np.ndarray], tuple]


def inverse_cholesky(h: np.ndarray) -> np.ndarray:
    """Upper Cholesky factor U of (H + damping)^-1 (K, K) float64, H^-1 = U^T U."""
    h = np.array(h, dtype=np.float64)
    dead = np.diag(h) <= 0  # an input that is always 0: its weights do not matter
    h[dead, dead] = 1.0
    h[np.diag_indices_from(h)] += DAMP * float(np.mean(np.diag(h)))
    lower = np.linalg.cholesky(h)
    inv_lower = np.linalg.solve(lower, np.eye(len(h)))  # L^-1
    hinv = inv_lower.T @ inv_lower  # H^-1 = L^-T L^-1
    return np.linalg.cholesky(hinv).T  # upper: H^-1 = U^T U


def gptq_blocks(
    w: np.ndarray, u: np.ndarray, fit: GridFit, levels: int, block: int = BLOCK
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """w (K, N) float, u (K, K) = inverse_cholesky(H) of the inputs' autocorrelation H (any
    positive scale; one factor serves every format of the layers sharing H), K a multiple
    of `block` (rows sharing one d and m: 32 or a multiple) -> codes (K/block, block, N) uint8
    in 0..levels-1, d and m (K/block, N) fp16, such that d q + m (fp32 arithmetic) is the
    quantized weight (module docstring)."""
    w = np.array(w, dtype=np.float64)
    k, n = w.shape
    if block <= 0 or block % BLOCK:
        raise ValueError(f"gptq_blocks: block must be a multiple of {BLOCK}, got {block}")
    if k % block or u.shape != (k, k):
        raise ValueError(
            f"gptq_blocks needs K a multiple of {block} and U (K, K); got {w.shape}, U {u.shape}"
        )
    codes = np.zeros((k // block, block, n), np.uint8)
    scale = np.zeros((k // block, n), np.float16)
    minimum = np.zeros((k // block, n), np.float16)
    lazy = block * max(1, LAZY // block)  # whole blocks per span: a fit sees its rows updated
    for start in range(0, k, lazy):
        stop = min(start + lazy, k)
        errors = np.zeros((stop - start, n))
        for row in range(start, stop):
            b, j = divmod(row, block)
            if j == 0:  # the block's grid, from its values as compensated so far
                fitted = fit(w[row : row + block].astype(np.float32)[None])
                scale[b], minimum[b] = fitted[1][0], fitted[2][0]
            d, m = scale[b][None], minimum[b][None]
            codes[b, j] = block_codes(w[row][None, None].astype(np.float32), d, m, levels)[0, 0]
            value = decode_blocks(codes[b, j][None, None], d, m)[0, 0]
            e = (w[row] - value) / u[row, row]
            w[row + 1 : stop] -= np.outer(u[row, row + 1 : stop], e)
            errors[row - start] = e
        w[stop:] -= u[start:stop, stop:].T @ errors
    return codes, scale, minimum
