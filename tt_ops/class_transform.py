"""Steps 1-2 of transform coding (numpy): rows split into token-frequency classes, centred per
class, whitened by the loss-sensitivity metric M^{1/2} and rotated to the principal axes of
the class-balanced covariance.

In chunks of rows (issue 17): the (V, D) coefficients are never held. A pass over the table
computes the class means, a second the covariance, a third the per-(class, axis) energies;
`ClassTransform.coefficients` gives any row range's coefficients again when the coder needs
them (transform_fit.py). Memory: the caller's table plus one chunk's float64 temporaries.

Same numbers as holding everything: the means, energies and scales are sums over rows in row
order, continued chunk after chunk (`RowSums`: one `np.add.reduce` over the running sum and the
chunk, which numpy evaluates row after row, so the result is the whole-table reduction's bit for
bit); the coefficients of a row range are the rows of the whole-table matrix products (BLAS
computes each output row alone). Only the covariance is summed chunk by chunk (one matrix
product per chunk, added), so it differs from the one-product covariance in the last bits;
with a single chunk (`chunk_rows >= V`) it is the same product.
"""

from __future__ import annotations

import dataclasses

import numpy as np

MAX_CLASSES = 16
CHUNK_BYTES = 64 << 20  # float64 bytes of one chunk of rows (its temporaries: a few of these)


def chunk_rows_for(dim: int, chunk_rows: int | None = None) -> int:
    """Rows per chunk: `chunk_rows`, or as many (D,) float64 rows as CHUNK_BYTES holds (at
    least 256): chunks large enough for fast matrix products, small beside the table."""
    if chunk_rows is not None:
        if int(chunk_rows) < 1:
            raise ValueError(f"chunk_rows: must be >= 1, got {chunk_rows}")
        return int(chunk_rows)
    return max(256, CHUNK_BYTES // (8 * max(dim, 1)))


def row_chunks(n_rows: int, rows: int) -> list[slice]:
    return [slice(s, min(s + rows, n_rows)) for s in range(0, n_rows, rows)]


class RowSums:
    """Per-class sums over rows (axis 0), accumulated chunk by chunk in row order: equal bit
    for bit to one `np.add.reduce(values_of_class, axis=0)` over all of a class's rows."""

    def __init__(self, n_classes: int, dim: int) -> None:
        self._sums: list[np.ndarray | None] = [None] * n_classes
        self._dim = dim

    def add(self, c: int, values: np.ndarray) -> None:
        if len(values) == 0:
            return
        total = self._sums[c]
        if total is not None:
            values = np.concatenate([total[None], values])
        self._sums[c] = np.add.reduce(values, axis=0)

    def result(self) -> np.ndarray:
        return np.stack([np.zeros(self._dim) if s is None else s for s in self._sums])


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

    x = means[cid] + y @ basis for every row, y = (x - means[cid]) @ whiten @ rotation
    (`coefficients`); W[c, i] = sum over rows r of class c of w_r y_ri^2 (importance-weighted
    energy), sig[c, i] = RMS of y_ri over the class.
    """

    cid: np.ndarray  # (V,) class per row
    w: np.ndarray  # (V,) row importance (mean 1)
    basis: np.ndarray  # (D, D) float
    means: np.ndarray  # (C, D)
    W: np.ndarray  # (C, D)
    sig: np.ndarray  # (C, D)
    whiten: np.ndarray | None  # (D, D) M^{1/2}; None for the identity metric (no product)
    rotation: np.ndarray  # (D, D) principal axes, largest first
    chunk_rows: int  # rows per chunk of every pass

    def whitened(self, x: np.ndarray, rows: slice) -> np.ndarray:
        """(n, D) float64: rows `rows` of x, centred by their class mean and whitened."""
        cid = self.cid[rows]
        z = x[rows].astype(np.float64)
        z -= self.means[cid]
        return z if self.whiten is None else z @ self.whiten

    def coefficients(self, x: np.ndarray, rows: slice = slice(None)) -> np.ndarray:
        """(n, D) float64 coefficients y of rows `rows` of the table x (the rows of the
        whole-table product: BLAS computes each output row alone)."""
        return self.whitened(x, rows) @ self.rotation


def class_transform(
    x: np.ndarray, weights, m: np.ndarray, class_scale=None, chunk_rows: int | None = None
) -> ClassTransform:
    """Classes by importance, per-class centring, whitening by M^{1/2}, principal axes of the
    class-balanced covariance (x: (V, D) float, read chunk by chunk in float64; weights: (V,)
    or None; m: (D, D) PSD; chunk_rows: see `chunk_rows_for`)."""
    V, D = x.shape
    rows_per = chunk_rows_for(D, chunk_rows)
    chunks = row_chunks(V, rows_per)
    # 1. classes and row weights (the floor class gets the weight of a token seen once/2)
    cid = assign_classes(weights, V)
    C = int(cid.max()) + 1
    n_c = np.bincount(cid, minlength=C)
    w = row_importance(weights, V)
    if class_scale is not None:
        cs = np.asarray(class_scale, dtype=np.float64).reshape(-1)
        if cs.shape[0] != C or not np.isfinite(cs).all() or (cs <= 0).any():
            raise ValueError(f"class_scale: expected {C} positive finite values")
        w = w * cs[cid]

    # 2. transform: means (pass 1), class-balanced covariance of the whitened rows (pass 2)
    msq, misq = _psd_sqrt(m)
    identity = np.array_equal(msq, np.eye(D))  # then z = centred exactly: skip the product
    sums = RowSums(C, D)
    for s in chunks:
        xs = x[s].astype(np.float64)
        for c in np.unique(cid[s]):
            sums.add(c, xs[cid[s] == c])
    means = sums.result() / np.maximum(n_c, 1)[:, None]
    t = ClassTransform(cid, w, None, means, None, None, None if identity else msq, None, rows_per)
    cov = np.zeros((D, D))
    for s in chunks:
        z = t.whitened(x, s)
        for c in np.unique(cid[s]):
            zc = z[cid[s] == c]
            cov += zc.T @ zc / max(int(n_c[c]), 1)  # class-balanced
    lam, u = np.linalg.eigh((cov + cov.T) / 2)
    t.rotation = u[:, ::-1]
    t.basis = t.rotation.T @ misq  # (D, D): x = mean + y @ basis

    # per (class, axis) weighted energies and scales (pass 3)
    energy, square = RowSums(C, D), RowSums(C, D)
    for s in chunks:
        y = t.coefficients(x, s)
        for c in np.unique(cid[s]):
            sel = cid[s] == c
            y2 = y[sel] ** 2
            energy.add(c, w[s][sel, None] * y2)
            square.add(c, y2)
    t.W = energy.result()
    t.sig = np.sqrt(square.result() / np.maximum(n_c, 1)[:, None])
    return t
