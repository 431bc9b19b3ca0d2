"""Step 4 of transform coding and the whole encoder (numpy): `fit_transform_code` runs the class
transform (class_transform.py), the bit allocation (bit_allocation.py), then fits a scalar
Lloyd codebook per (class, bit width) and writes the codes (format: transform_code.py)."""

from __future__ import annotations

import math

import numpy as np

from tensorgpt.tt_ops.bit_allocation import MAX_BITS, allocate_bits
from tensorgpt.tt_ops.bit_packing import PLANES, pack_bits
from tensorgpt.tt_ops.class_transform import class_transform
from tensorgpt.tt_ops.head_gain import head_logit_gain
from tensorgpt.tt_ops.row_codecs import int8_rows
from tensorgpt.tt_ops.transform_code import CodeGroup, TransformCodedTable


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

    # 1.-2. classes, row weights, transform
    t = class_transform(x, weights, m, class_scale)
    cid, w, y, basis_f, means, W, sig = t.cid, t.w, t.y, t.basis, t.means, t.W, t.sig
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
        W,
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
    bk = basis_f[used]
    if basis_bits == 8:
        basis_q, bscale = int8_rows(bk)
    else:
        bscale = np.ones(K)
        basis_q = bk.astype(np.float16)
    col = {int(a): j for j, a in enumerate(used)}

    # 5. codebooks + codes
    groups = []
    scale = np.zeros((C, K), dtype=np.float64)
    for c in range(C):
        rows = np.flatnonzero(cid == c)
        for b in range(1, max_bits + 1):
            ax = np.flatnonzero(bits[c] == b)
            if ax.size == 0:
                continue
            s = np.where(sig[c, ax] > 0, sig[c, ax], 1.0)
            cb16, codes = _code_group(y[np.ix_(rows, ax)] / s, np.repeat(w[rows], len(ax)), b, rng)
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
        means=means.astype(np.float16),
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
    head = enc.decode().astype(np.float64)  # the tied head's rows as the graph computes them
    if head_states is not None:
        anchor = enc.means.astype(np.float64)[enc.class_ids.astype(np.int64)]
        multiplier, softcap = head_logits
        enc.logit_scale = head_logit_gain(
            x, head, head_states, anchor=anchor, logit_multiplier=multiplier, softcap=softcap
        ).astype(np.float16)
        head = anchor + enc.logit_scale.astype(np.float64)[:, None] * (head - anchor)
    if mu is not None:
        enc.logit_bias = ((x - head) @ mu).astype(np.float16)
    if enc.nbytes() + (2 * V if row_scale else 0) > budget:  # pragma: no cover (accounting bug)
        raise AssertionError(f"budget overrun: {enc.nbytes()} > {budget}")
    if row_scale:
        # least-squares gain per row in the metric: g = <r, m r^> / <r^, m r^>
        xr = enc.decode() - means.astype(np.float16).astype(np.float64)[cid]
        xt = x - means.astype(np.float16).astype(np.float64)[cid]
        mx = xr @ m
        num = (mx * xt).sum(1)
        den = (mx * xr).sum(1)
        g = np.where(den > 0, num / np.maximum(den, 1e-30), 1.0)
        enc.row_gain = np.clip(g, 0.0, 4.0).astype(np.float16)
    return enc


def _code_group(u_n: np.ndarray, wf: np.ndarray, bits: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Codebook (float16, 2**bits levels) and codes (uint8, shape of u_n) of one (class, bit
    width) group: normalised coefficients u_n (rows, axes), their row weights wf (flat)."""
    flat = u_n.reshape(-1)
    if flat.size > 400_000:  # the codebook from a sample, the codes for every value
        pick = rng.choice(flat.size, 400_000, replace=False)
        cb = _lloyd(flat[pick], wf[pick], bits)
    else:
        cb = _lloyd(flat, wf, bits)
    cb16 = cb.astype(np.float16)
    cbf = cb16.astype(np.float64)
    mids = (cbf[1:] + cbf[:-1]) / 2
    return cb16, np.searchsorted(mids, u_n).astype(np.uint8)


def _check_table(table) -> np.ndarray:
    x = np.asarray(table)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 1:
        raise ValueError(f"table: expected a 2-D (V, D) array, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating) or not np.isfinite(x).all():
        raise ValueError("table: expected finite floating-point values")
    return x.astype(np.float64)


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
