"""Tensorization shapes: how D numbers (or V rows) become the modes of a tensor.

TensorGPT pads a D-vector to N = 2^d >= D and views it as an order-d tensor of 2s. Any other
factorization N = n_1 * ... * n_d >= D works the same way (768 = 4*4*4*4*3 needs no padding).
The structural TT ranks of an order-d tensor are r_k = min(n_1...n_k, n_{k+1}...n_d): no
unfolding has a larger rank.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .validation import check_positive_int


def paper_mode_sizes(dim: int) -> tuple[int, ...]:
    """TensorGPT's tensorization: (2,)*d with 2^d the next power of two >= dim (d >= 1)."""
    dim = check_positive_int(dim, "dim")
    order = max(1, (dim - 1).bit_length())
    return (2,) * order


def check_mode_sizes(
    mode_sizes: Sequence[int], dim: int, name: str = "mode_sizes", exact: bool = False
) -> tuple[int, ...]:
    """A non-empty tuple of ints >= 1 whose product is dim (exact) or >= dim (padding allowed)."""
    if isinstance(mode_sizes, (str, bytes)) or not isinstance(mode_sizes, Sequence):
        raise ValueError(f"{name} must be a list of ints, got {mode_sizes!r}")
    sizes = tuple(check_positive_int(n, f"{name}[{i}]") for i, n in enumerate(mode_sizes))
    if not sizes:
        raise ValueError(f"{name} must not be empty")
    prod = math.prod(sizes)
    if exact and prod != dim:
        raise ValueError(f"{name} {list(sizes)} multiply to {prod}, expected exactly {dim}")
    if not exact and prod < dim:
        raise ValueError(
            f"{name} {list(sizes)} multiply to {prod}, which is smaller than the dimension {dim} "
            "(rows can be zero-padded, not cut)"
        )
    return sizes


def max_ranks(mode_sizes: Sequence[int]) -> tuple[int, ...]:
    """Structural TT ranks (r_0..r_d), r_k = min(n_1...n_k, n_{k+1}...n_d); r_0 = r_d = 1."""
    return tuple(
        min(math.prod(mode_sizes[:k]), math.prod(mode_sizes[k:]))
        for k in range(len(mode_sizes) + 1)
    )


def _ceil_root(x: int, k: int) -> int:
    """Smallest integer c with c**k >= x (exact integer arithmetic; floats only as a guess)."""
    c = max(1, round(x ** (1.0 / k)))
    while c**k < x:
        c += 1
    while c > 1 and (c - 1) ** k >= x:
        c -= 1
    return c


def _prime_factors(n: int) -> list[int]:
    factors, p = [], 2
    while p * p <= n:
        while n % p == 0:
            factors.append(p)
            n //= p
        p += 1
    if n > 1:
        factors.append(n)
    return factors


def suggest_factors(n: int, order: int, exact: bool = True) -> tuple[int, ...]:
    """Balanced factors (f_1 >= ... >= f_order) of n.

    exact=True: prod f_k == n; the prime factors, largest first, go to the smallest bucket
        (768, 3 -> (12, 8, 8)). A large prime factor makes this unbalanced; use exact=False.
    exact=False: prod f_k >= n with f_k ~ n^(1/order), i.e. little padding
        (50257, 3 -> (37, 37, 37) = 50653 rows, 396 zero rows of padding).
    """
    n = check_positive_int(n, "n")
    order = check_positive_int(order, "order")
    if exact:
        buckets = [1] * order
        for p in sorted(_prime_factors(n), reverse=True):
            buckets[buckets.index(min(buckets))] *= p
        return tuple(sorted(buckets, reverse=True))
    factors, rest = [], n
    for k in range(order, 0, -1):
        f = _ceil_root(rest, k)
        factors.append(f)
        rest = -(-rest // f)  # ceil division: rows left to cover by the remaining factors
    return tuple(sorted(factors, reverse=True))
