"""Choose one storage format per matrix under a byte budget (numpy), for `--quantize mixed`.

Matrix i stored in format f costs bytes[i, f] and adds loss[i, f] (an estimate of the loss
increase, in one unit for all matrices: export/mixed_weights.py). Minimize sum_i loss[i, f_i]
subject to sum_i bytes[i, f_i] <= budget, greedily: start every matrix in its largest format,
then repeatedly take the step, over all matrices, from its current format to a smaller one
that adds the least loss per byte saved (the lower convex hull of each matrix's
(bytes, loss) points: a step that saves more bytes at a better rate is taken instead of a
dominated intermediate), until the total fits. The optimal answer of the relaxed problem
(matrices splittable) up to the last step, as for rate allocation in transform coding.
"""

from __future__ import annotations

import numpy as np


def allocate_formats(loss: np.ndarray, nbytes: np.ndarray, budget: float) -> np.ndarray:
    """loss, nbytes (M, F) with F formats per matrix -> format index per matrix (M,) int.

    Raises ValueError when even the smallest format of every matrix exceeds the budget."""
    loss = np.asarray(loss, dtype=np.float64)
    nbytes = np.asarray(nbytes, dtype=np.float64)
    if loss.shape != nbytes.shape or loss.ndim != 2:
        raise ValueError(f"loss and nbytes must both be (M, F), got {loss.shape}, {nbytes.shape}")
    if nbytes.min(1).sum() > budget:
        raise ValueError(
            f"the budget {budget:.0f} bytes is below the smallest formats' total "
            f"{nbytes.min(1).sum():.0f}"
        )
    choice = nbytes.argmax(1)
    rows = np.arange(len(loss))
    total = nbytes[rows, choice].sum()
    while total > budget:
        best, best_rate = None, np.inf
        for i in rows:
            b0, l0 = nbytes[i, choice[i]], loss[i, choice[i]]
            smaller = np.flatnonzero(nbytes[i] < b0)
            if not smaller.size:
                continue
            # rate of each step; on ties the larger saving (the hull's far point) wins
            rates = (loss[i, smaller] - l0) / (b0 - nbytes[i, smaller])
            j = smaller[np.lexsort((nbytes[i, smaller], rates))[0]]
            rate = (loss[i, j] - l0) / (b0 - nbytes[i, j])
            if rate < best_rate:
                best, best_rate = (i, j), rate
        i, j = best
        total -= nbytes[i, choice[i]] - nbytes[i, j]
        choice[i] = j
    return choice
