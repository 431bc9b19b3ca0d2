"""TensorGPT's compression table, computed from shapes alone (no data).

A D-vector padded to 2^d >= D as an order-d tensor of 2s has TT ranks
r_k = min(cap, 2^k, 2^(d-k)) and sum_k r_{k-1} * 2 * r_k parameters per token; the ratio is
D / params (the padding counts against the TT). For D = 768 (d = 10):

    cap 1: 20 params, 38.40x   cap 2: 72, 10.67x   cap 4: 232, 3.31x   cap 8: 680, 1.13x
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .shapes import max_ranks, paper_mode_sizes
from .validation import check_positive_int


def paper_ranks(dim: int, rank_cap: int) -> list[int]:
    """TT ranks (r_0..r_d) of the paper's tensorization of a `dim`-vector under `rank_cap`."""
    rank_cap = check_positive_int(rank_cap, "rank_cap")
    return [min(rank_cap, r) for r in max_ranks(paper_mode_sizes(dim))]


def paper_ratios(dim: int, ranks: Sequence[int]) -> list[dict]:
    """One {"rank", "params_per_token", "ratio"} per rank cap; ratio = dim / params_per_token."""
    dim = check_positive_int(dim, "dim")
    ranks = list(ranks) if isinstance(ranks, np.ndarray) else ranks
    if isinstance(ranks, (str, bytes)) or not isinstance(ranks, Sequence) or not ranks:
        raise ValueError(f"ranks must be a non-empty list of ints, got {ranks!r}")
    rows = []
    for i, cap in enumerate(ranks):
        r = paper_ranks(dim, check_positive_int(cap, f"ranks[{i}]"))
        params = sum(2 * a * b for a, b in zip(r[:-1], r[1:]))
        rows.append({"rank": int(cap), "params_per_token": params, "ratio": dim / params})
    return rows
