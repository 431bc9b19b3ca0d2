"""Input checks shared by the decompositions.

Every check runs before any work starts and raises ValueError with a message that names the
argument, so that `tensorgpt ...` can print it as a one-line user error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

RANK_MODES = ("row", "table", "every-row")


def check_table(table: np.ndarray, name: str = "table") -> np.ndarray:
    """Return `table` as a finite, floating, non-empty 2-D numpy array (V rows x D columns)."""
    arr = np.asarray(table)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (vocab rows x dim columns), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{name} must have a real floating dtype, got {arr.dtype}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"{name} must have at least one row and one column, got shape {arr.shape}")
    finite = np.isfinite(arr)
    if not finite.all():
        bad = int(arr.size - np.count_nonzero(finite))
        first = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise ValueError(f"{name} contains {bad} NaN or Inf values (first at row, col {first})")
    return arr


def check_positive_int(value: object, name: str) -> int:
    """An int >= 1 (numpy ints accepted, bools rejected)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def check_rank_caps(
    rank: int | Sequence[int] | None, max_ranks: Sequence[int], name: str = "rank"
) -> tuple[int, ...]:
    """Per-bond rank caps (r_1..r_{d-1}) for a TT of order d = len(max_ranks) - 1.

    `rank` is one cap for every bond, a list of d-1 caps (one per internal bond), or a list of
    d+1 ranks whose ends are 1 (TensorLy's convention). None means no cap. Caps above the
    structural maximum `max_ranks` (min of the two unfolding sides) are clipped to it, as
    TT-SVD does anyway.
    """
    inner = tuple(int(r) for r in max_ranks[1:-1])
    n_bonds = len(inner)
    if rank is None:
        return inner
    if isinstance(rank, str):
        raise ValueError(f"{name} must be an int or a list of ints, got the string {rank!r}")
    if isinstance(rank, (Sequence, np.ndarray)):
        caps = [check_positive_int(r, f"{name}[{i}]") for i, r in enumerate(rank)]
        if len(caps) == n_bonds + 2:
            if caps[0] != 1 or caps[-1] != 1:
                raise ValueError(
                    f"{name} with {n_bonds + 2} entries (boundary ranks included) must start and "
                    f"end with 1, got {caps}"
                )
            caps = caps[1:-1]
        if len(caps) != n_bonds:
            raise ValueError(
                f"{name} must have {n_bonds} entries (one per internal bond of an order-"
                f"{n_bonds + 1} TT) or {n_bonds + 2} with the boundary 1s, got {len(caps)}"
            )
    else:
        caps = [check_positive_int(rank, name)] * n_bonds
    return tuple(min(c, m) for c, m in zip(caps, inner))


def check_rel_error(rel_error: float | None, name: str = "rel_error") -> float | None:
    """None, or a finite relative error eps >= 0 (0 asks for an exact decomposition)."""
    if rel_error is None:
        return None
    if isinstance(rel_error, bool) or not isinstance(rel_error, (int, float, np.floating)):
        raise ValueError(f"{name} must be a number >= 0, got {rel_error!r}")
    eps = float(rel_error)
    if not math.isfinite(eps) or eps < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {rel_error!r}")
    return eps


def check_choice(value: str, choices: Sequence[str], name: str) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value
