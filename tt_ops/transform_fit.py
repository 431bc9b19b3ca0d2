"""Step 4 of transform coding and the whole encoder (numpy): `fit_transform_code` runs the class
transform (class_transform.py), the bit allocation (bit_allocation.py), then fits a scalar
Lloyd codebook per (class, bit width) and writes the codes (format: transform_code.py)."""

from __future__ import annotations

import math

import numpy as np

from tensorgpt.tt_ops.bit_allocation import MAX_BITS, allocate_bits
from tensorgpt.tt_ops.bit_packing import PLANES, pack_bits
from tensorgpt.tt_ops.class_transform import class_transform, row_chunks
from tensorgpt.tt_ops.head_gain import head_logit_gain
from tensorgpt.tt_ops.row_codecs import int8_rows
from tensorgpt.tt_ops.transform_code import CodeGroup, TransformCodedTable

SAMPLE = 400_000  # values a group's codebook is fitted on, at most (a seeded draw)


def _lloyd(u: np.ndarray, w: np.ndarray, bits: int, iters: int = 25) -> np.ndarray:
    """Weighted 1-D Lloyd codebook with 2**bits levels for normalised values u."""
    k = 1 << bits
    if u.size == 0:
        return np.zeros(k)
    # init: weighted quantiles
    o = np.argsort(u)
    cw = np.cumsum(w[o])
    cw /= cw[-1]
    cb = u[o][np.minimum(np.searchsorted(cw, (np.arange(k) + 0.5) / k), u.size - 1)]
    for _ in range(iters):
        cb = np.sort(cb)
        idx = np.searchsorted((cb[1:] + cb[:-1]) / 2, u)
        sw = np.bincount(idx, w, minlength=k)
        su = np.bincount(idx, w * u, minlength=k)
        nz = sw > 0
        cb[nz] = su[nz] / sw[nz]
    return np.sort(cb)


def fit_transform_code(
    table,
    *,
    bits_per_weight: float | None = None,
    byte_budget: int | None = None,
    token_counts=None,
    sensitivity=None,
    seed: int = 0,
    floor_bits: float | None = None,
    basis_bits: int = 8,
    row_scale: bool = False,
    max_bits: int = MAX_BITS,
    class_scale=None,
    head_mean=None,
    chunk_rows: int | None = None,
    head_states=None,
    head_logits: tuple[float, float | None] = (1.0, None),
) -> TransformCodedTable:
    """Encode a (V, D) table in about `bits_per_weight * V * D / 8` bytes (or `byte_budget`).

    token_counts: (V,) non-negative per-row importance (token counts on a calibration text,
        or loss-weighted counts).  Rows of weight 0 form the floor class.  None: one class.
    sensitivity: (D, D) symmetric PSD loss-sensitivity metric M (error e of a row costs
        e^T M e).  None: identity.
    floor_bits: bits per weight every class gets before the rest is allocated by importance
        (default: a quarter of the average budget, capped at 1).
    class_scale: optional (C,) positive multipliers of the classes' importance (C = number of
        classes `assign_classes(token_counts)` gives), e.g. measured loss increase per unit of
        predicted distortion on calibration text (see benchmarks/quality_frontier.py).
    head_mean: optional (D,) mean of the LM head's input over calibration positions, for a
        table tied to the head: the code then also stores logit_bias (V,) fp16, b_v =
        head_mean . (x_v - decoded x_v), the part of each token's logit error common to every
        position (transform_code.py); its 2 bytes per row come out of the budget.
    chunk_rows: rows per chunk of the passes over the table (default: 64 MiB of float64
        rows, class_transform.py); the table is never copied whole, and any value gives the
        same code byte for byte.
    head_states: optional (T, D) inputs of the tied head at calibration positions: the code then
        also stores logit_scale (V,) fp16, the gain a_v of each row's coded part (beyond its
        class mean) in the head's logits, fitted where the token competes as an output
        (tt_ops/head_gain.py); with head_mean the bias is taken after it. 2 bytes per row, in
        the budget.
    head_logits: (multiplier, softcap) the model applies to the head's product before its
        softmax (head_gain.py), for head_states' probability weights.
    The total (codes + codebooks + scales + basis + means + class ids + gains + logit bias)
    never exceeds the budget.
    """
    x = _check_table(table)
    V, D = x.shape
    budget = _budget(V, D, bits_per_weight, byte_budget)
    if basis_bits not in (8, 16):
        raise ValueError(f"basis_bits: 8 or 16, got {basis_bits}")
    if not 1 <= int(max_bits) <= 8:
        raise ValueError(f"max_bits: 1..8, got {max_bits}")
    weights = _check_weights(token_counts, V)
    m = _check_metric(sensitivity, D)
    mu = _check_head_mean(head_mean, D)
    avg_bpw = 8.0 * budget / (V * D)
    if floor_bits is None:
        floor_bits = min(1.0, avg_bpw / 4)
    if floor_bits < 0:
        raise ValueError(f"floor_bits: must be >= 0, got {floor_bits}")
    rng = np.random.default_rng(seed)

    # 1.-2. classes, row weights, transform (in chunks of rows: class_transform.py)
    t = class_transform(x, weights, m, class_scale, chunk_rows)
    cid, sig = t.cid, t.sig
    C = int(cid.max()) + 1
    n_c = np.bincount(cid, minlength=C)

    # 3. bit allocation: greedy marginal returns (reverse water-filling), costs in bits:
    #    a bit on (c, i) costs n_c; the first bit of (c, i) also its int16 axis index; the
    #    first class to use axis i also pays the basis row (D bytes) and a scale per class.
    basis_row_bits = 8 * D * (1 if basis_bits == 8 else 2) + 16 * C
    fixed = ((V + 1) // 2 if C <= 16 else V) + C * D * 2  # class ids, means
    if row_scale:
        fixed += 2 * V
    if mu is not None:
        fixed += 2 * V  # logit_bias
    if head_states is not None:
        fixed += 2 * V  # logit_scale
    bits, avail = allocate_bits(
        t.W,
        n_c,
        budget_bits=8 * (budget - fixed),
        floor_bits=floor_bits,
        max_bits=max_bits,
        axis_bits=basis_row_bits,
    )
    if avail < 0:
        raise ValueError(
            f"bits_per_weight / byte_budget: {budget} bytes cannot hold the side information "
            f"and floor_bits={floor_bits} of a {V} x {D} table"
        )

    # 4. basis (kept axes only), quantized
    used = np.flatnonzero((bits > 0).any(0))
    K = len(used)
    bk = t.basis[used]
    if basis_bits == 8:
        basis_q, bscale = int8_rows(bk)
    else:
        bscale = np.ones(K)
        basis_q = bk.astype(np.float16)
    col = {int(a): j for j, a in enumerate(used)}

    # 5. codebooks + codes, one (class, bit width) group after the other
    specs = []
    for c in range(C):
        for b in range(1, max_bits + 1):
            ax = np.flatnonzero(bits[c] == b)
            if ax.size:
                specs.append((c, b, ax, np.where(sig[c, ax] > 0, sig[c, ax], 1.0)))
    groups = []
    scale = np.zeros((C, K), dtype=np.float64)
    for (c, b, ax, s), (cb16, codes) in zip(specs, _code_groups(x, t, specs, rng)):
        planes, off = [], 0
        for pw in PLANES[b]:
            planes.append((pw, pack_bits((codes >> off) & ((1 << pw) - 1), pw)))
            off += pw
        kcols = np.array([col[int(a)] for a in ax], dtype=np.int16)
        scale[c, kcols] = s * bscale[kcols]
        groups.append(CodeGroup(c, b, kcols, cb16, planes))
    scale16 = scale.astype(np.float16)

    enc = TransformCodedTable(
        vocab_size=V,
        dim=D,
        class_ids=cid.astype(np.uint8),
        means=t.means.astype(np.float16),
        scale=scale16,
        basis=basis_q,
        groups=groups,
        row_gain=None,
        meta={
            "method": "transform-code",
            "budget_bytes": budget,
            "floor_bits": float(floor_bits),
            "basis_bits": basis_bits,
            "class_sizes": n_c.tolist(),
            "class_bits_per_weight": (bits.sum(1) / D).tolist(),
            "kept_axes": K,
            "seed": seed,
        },
    )
    if mu is not None or head_states is not None:
        _head_fix(enc, x, mu, head_states, head_logits, chunk_rows)
    if enc.nbytes() + (2 * V if row_scale else 0) > budget:  # pragma: no cover (accounting bug)
        raise AssertionError(f"budget overrun: {enc.nbytes()} > {budget}")
    if row_scale:
        # least-squares gain per row in the metric: g = <r, m r^> / <r^, m r^>
        means16 = t.means.astype(np.float16).astype(np.float64)
        xr = enc.decode() - means16[cid]
        xt = x.astype(np.float64) - means16[cid]
        mx = xr @ m
        num = (mx * xt).sum(1)
        den = (mx * xr).sum(1)
        g = np.where(den > 0, num / np.maximum(den, 1e-30), 1.0)
        enc.row_gain = np.clip(g, 0.0, 4.0).astype(np.float16)
    return enc


def _head_fix(enc, x, mu, head_states, head_logits, chunk_rows) -> None:
    """The tied head's logit_scale (gain on each row's coded part) and/or logit_bias.

    Whole-table arrays are float32 only (the decode and the rows' class means, each V x D x 4
    bytes: 0.67 GB at 262144 x 640); float64 only chunk by chunk, so the peak stays a few
    tables' worth at a large vocabulary. The values are those of the float64 formulas: the
    gain fit reads float32 rows anyway (head_gain.py), and fp16 means are exact in float32."""
    head = enc.decode()  # (V, D) float32: the tied head's rows as the graph computes them
    anchor = enc.means.astype(np.float32)[enc.class_ids.astype(np.int64)]
    if head_states is not None:
        multiplier, softcap = head_logits
        enc.logit_scale = head_logit_gain(
            x, head, head_states, anchor=anchor, logit_multiplier=multiplier, softcap=softcap
        ).astype(np.float16)
    if mu is None:
        return
    bias = np.empty(len(head))
    gain = None if enc.logit_scale is None else enc.logit_scale.astype(np.float64)
    for rows in row_chunks(len(head), chunk_rows or 65536):
        h = head[rows].astype(np.float64)
        if gain is not None:  # the rows the head uses after the gain, as in float64 before
            a = anchor[rows].astype(np.float64)
            h = a + gain[rows, None] * (h - a)
        bias[rows] = (np.asarray(x[rows], dtype=np.float64) - h) @ mu
    enc.logit_bias = bias.astype(np.float16)


def _code_groups(x: np.ndarray, t, specs: list, rng) -> list[tuple[np.ndarray, np.ndarray]]:
    """Codebook (float16, 2**bits levels) and codes (uint8 (n_c, m)) of every (class, bit
    width) group of `specs` [(class, bits, axes (m,), scales (m,))], in two passes over the
    table's rows (ClassTransform.coefficients per chunk; no (V, D) float array is held).

    A group's values are its class's coefficients on its axes over the scales, flat in
    (row, axis) order; its codebook is the weighted Lloyd fit on all of them or, past SAMPLE,
    on SAMPLE of them drawn by `rng` (group after group, in `specs` order); its codes map
    every value to the nearest level. Pass 1 gathers what the fits need, pass 2 the codes."""
    rows_of = {c: np.flatnonzero(t.cid == c) for c in sorted({spec[0] for spec in specs})}
    picks = []  # per group: None (every value), or (drawn flat indices, argsort, sorted)
    for c, _, ax, _ in specs:
        size = rows_of[c].size * ax.size
        pick = rng.choice(size, SAMPLE, replace=False) if size > SAMPLE else None
        order = None if pick is None else np.argsort(pick)
        picks.append(None if pick is None else (pick, order, pick[order]))
    samples = [
        np.empty(rows_of[c].size * ax.size if p is None else SAMPLE)
        for (c, _, ax, _), p in zip(specs, picks)
    ]

    def blocks():
        """(group, index of its class's first row in this chunk, values (n, m)) per chunk."""
        seen = dict.fromkeys(rows_of, 0)  # rows of each class before this chunk
        for rows in row_chunks(len(t.cid), t.chunk_rows):
            y = t.coefficients(x, rows)
            local = {c: np.flatnonzero(t.cid[rows] == c) for c in rows_of}
            for g, (c, _, ax, s) in enumerate(specs):
                if local[c].size:
                    yield g, seen[c], y[np.ix_(local[c], ax)] / s
            for c in rows_of:
                seen[c] += local[c].size

    for g, first, u in blocks():  # pass 1: the values each codebook is fitted on
        m = u.shape[1]
        lo, hi = first * m, (first + u.shape[0]) * m
        if picks[g] is None:
            samples[g][lo:hi] = u.reshape(-1)
        else:
            _, order, ascending = picks[g]
            i, j = np.searchsorted(ascending, [lo, hi])
            samples[g][order[i:j]] = u.reshape(-1)[ascending[i:j] - lo]
    books, mids = [], []
    for (c, b, ax, _), p, values in zip(specs, picks, samples):
        row_w = t.w[rows_of[c]]
        flat_w = np.repeat(row_w, ax.size) if p is None else row_w[p[0] // ax.size]
        cb16 = _lloyd(values, flat_w, b).astype(np.float16)
        cbf = cb16.astype(np.float64)
        books.append(cb16)
        mids.append((cbf[1:] + cbf[:-1]) / 2)
    del samples
    codes = [np.empty((rows_of[c].size, ax.size), np.uint8) for c, _, ax, _ in specs]
    for g, first, u in blocks():  # pass 2: every value's code
        codes[g][first : first + u.shape[0]] = np.searchsorted(mids[g], u)
    return list(zip(books, codes))


def _check_table(table) -> np.ndarray:
    x = np.asarray(table)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 1:
        raise ValueError(f"table: expected a 2-D (V, D) array, got shape {x.shape}")
    finite = np.issubdtype(x.dtype, np.floating) and all(
        np.isfinite(x[rows]).all() for rows in row_chunks(x.shape[0], 8192)
    )
    if not finite:
        raise ValueError("table: expected finite floating-point values")
    return x  # read in float64 chunk by chunk (class_transform.py), never copied whole


def _budget(V: int, D: int, bits_per_weight, byte_budget) -> int:
    """The byte budget from exactly one of bits_per_weight and byte_budget."""
    if (bits_per_weight is None) == (byte_budget is None):
        raise ValueError("bits_per_weight / byte_budget: give exactly one")
    if bits_per_weight is not None:
        if not (np.isfinite(bits_per_weight) and bits_per_weight > 0):
            raise ValueError(f"bits_per_weight: must be > 0, got {bits_per_weight}")
        return int(math.floor(bits_per_weight * V * D / 8))
    if int(byte_budget) <= 0:
        raise ValueError(f"byte_budget: must be > 0, got {byte_budget}")
    return int(byte_budget)


def _check_weights(token_counts, V: int) -> np.ndarray | None:
    """(V,) float64 row weights, or None (no counts, or all zero: one class)."""
    if token_counts is None:
        return None
    weights = np.asarray(token_counts, dtype=np.float64).reshape(-1)
    if weights.shape[0] != V:
        raise ValueError(f"token_counts: expected {V} entries, got {weights.shape[0]}")
    if not np.isfinite(weights).all() or (weights < 0).any():
        raise ValueError("token_counts: must be finite and >= 0")
    return None if weights.sum() <= 0 else weights


def _check_head_mean(head_mean, D: int) -> np.ndarray | None:
    if head_mean is None:
        return None
    mu = np.asarray(head_mean, dtype=np.float64).reshape(-1)
    if mu.shape[0] != D or not np.isfinite(mu).all():
        raise ValueError(f"head_mean: expected {D} finite values, got shape {np.shape(head_mean)}")
    return mu


def _check_metric(sensitivity, D: int) -> np.ndarray:
    if sensitivity is None:
        return np.eye(D)
    m = np.asarray(sensitivity, dtype=np.float64)
    if m.shape != (D, D) or not np.isfinite(m).all():
        raise ValueError(f"sensitivity: expected a finite ({D}, {D}) matrix, got {m.shape}")
    return m
