"""Steps 1-2 of transform coding (numpy): rows split into token-frequency classes, centred per
class, whitened by the loss-sensitivity metric M^{1/2} and rotated to the principal axes of
the class-balanced covariance."""

from __future__ import annotations

import dataclasses

import numpy as np

MAX_CLASSES = 16
_CHUNK_ROWS = 8192  # rows per step where a whole-table temporary is avoided


def row_importance(weights: np.ndarray | None, V: int) -> np.ndarray:
    """Per-row importance used by the allocator: weights, zeros -> half the smallest positive
    weight (the floor class), normalised to mean 1.  None -> all ones."""
    if weights is None:
        return np.ones(V)
    pos = weights[weights > 0]
    w = np.where(weights > 0, weights, 0.5 * pos.min())
    return w / w.mean()


def assign_classes(weights: np.ndarray | None, V: int) -> np.ndarray:
    """Class id per row: 64, 256, 1024, ... heaviest rows, then a floor class of weight 0."""
    if weights is None:
        return np.zeros(V, dtype=np.uint8)
    order = np.argsort(-weights, kind="stable")
    n_seen = int((weights > 0).sum())
    cid = np.zeros(V, dtype=np.uint8)
    bounds, b = [], 64
    while b < n_seen and len(bounds) < MAX_CLASSES - 2:
        bounds.append(b)
        b *= 4
    bounds.append(n_seen)
    start = 0
    for c, end in enumerate(bounds):
        cid[order[start:end]] = c
        start = end
    if n_seen < V:
        cid[order[n_seen:]] = len(bounds)
    # drop empty classes (renumber)
    _, cid = np.unique(cid, return_inverse=True)
    return cid.astype(np.uint8)


def _psd_sqrt(m: np.ndarray, eps: float = 1e-6):
    m = (m + m.T) / 2
    lam, q = np.linalg.eigh(m)
    lam = np.maximum(lam, eps * max(lam.max(), 1e-30))
    s = np.sqrt(lam)
    return (q * s) @ q.T, (q / s) @ q.T


@dataclasses.dataclass
class ClassTransform:
    """Steps 1-2 of the coder: rows in classes, centred, whitened and rotated.

    x = means[cid] + y @ basis for every row; W[c, i] = sum over rows r of class c of
    w_r y_ri^2 (importance-weighted energy), sig[c, i] = RMS of y_ri over the class.
    """

    cid: np.ndarray  # (V,) class per row
    w: np.ndarray  # (V,) row importance (mean 1)
    y: np.ndarray  # (V, D) coefficients
    basis: np.ndarray  # (D, D) float
    means: np.ndarray  # (C, D)
    W: np.ndarray  # (C, D)
    sig: np.ndarray  # (C, D)


def class_transform(x: np.ndarray, weights, m: np.ndarray, class_scale=None) -> ClassTransform:
    """Classes by importance, per-class centring, whitening by M^{1/2}, principal axes of the
    class-balanced covariance (x: (V, D) float64, weights: (V,) or None, m: (D, D) PSD)."""
    V, D = x.shape
    # 1. classes and row weights (the floor class gets the weight of a token seen once/2)
    cid = assign_classes(weights, V)
    C = int(cid.max()) + 1
    w = row_importance(weights, V)
    if class_scale is not None:
        cs = np.asarray(class_scale, dtype=np.float64).reshape(-1)
        if cs.shape[0] != C or not np.isfinite(cs).all() or (cs <= 0).any():
            raise ValueError(f"class_scale: expected {C} positive finite values")
        w = w * cs[cid]

    # 2. transform
    msq, misq = _psd_sqrt(m)
    means = np.stack([x[cid == c].mean(0) for c in range(C)])
    # centred rows, written chunk by chunk: `x - means[cid]` would also hold means[cid], a
    # (V, D) float64 array (the peak of a streaming export's fit); the values are the same
    centred = np.empty_like(x)
    for s in range(0, V, _CHUNK_ROWS):
        np.subtract(
            x[s : s + _CHUNK_ROWS], means[cid[s : s + _CHUNK_ROWS]], out=centred[s:][:_CHUNK_ROWS]
        )
    z = centred @ msq
    del centred
    cov = np.zeros((D, D))
    for c in range(C):
        zc = z[cid == c]
        cov += zc.T @ zc / max(len(zc), 1)  # class-balanced
    lam, u = np.linalg.eigh((cov + cov.T) / 2)
    u = u[:, ::-1]
    y = z @ u  # (V, D) coefficients
    basis_f = u.T @ misq  # (D, D): x = mean + y @ basis_f

    # per (class, axis) weighted energies and scales
    W = np.zeros((C, D))
    sig = np.zeros((C, D))
    for c in range(C):
        sel = cid == c
        W[c] = (w[sel, None] * y[sel] ** 2).sum(0)
        sig[c] = np.sqrt((y[sel] ** 2).mean(0))
    return ClassTransform(cid, w, y, basis_f, means, W, sig)
