"""Transform coding of an embedding table (training-free; issue 7).

A V x D table is coded as

    x_r = mean[c] + g_r * sum_j  codebook[c,b][code_r,j] * scale[c, a_j] * basis[a_j, :]

with c = class of row r (token-frequency class), the sum running over the axes a_j that
class c codes (grouped by their bit width b), `basis` the rows of the inverse of the
transform  T = M^{1/2} U  (M: loss-sensitivity metric, U: principal axes of the whitened,
class-centred rows), and g_r an optional per-row gain.

Encoding (no training):
  1. rows are split into classes by importance weight (token counts or any per-row weight):
     the 64 heaviest, the next 192 (-> 256), then 4x larger each time (1024, 4096, ...),
     and a last *floor* class with every row of zero weight (tokens never seen in the
     calibration text).  No weights -> one class.
  2. rows are centred per class, whitened by M^{1/2} and rotated to the principal axes
     (eigenvectors of the class-balanced covariance).
  3. bits per (class, axis) by reverse water-filling: greedy marginal allocation minimising
     sum_c W_c sum_i lambda_ci d(b_ci) (W_c weighted class energy, d = Lloyd-Max distortion
     of a unit Gaussian) under the byte budget.  Every class first gets `floor_bits` bits per
     weight (so unseen tokens are never left to chance), then the rest goes where it helps.
  4. scalar Lloyd codebooks per (class, bit width), fitted (importance-weighted) on the
     coefficients normalised by the per-(class, axis) scale.

Storage (all counted by `nbytes`): per (class, bit width) group the codes are split into bit
planes of width 4, 2, 1 (the binary digits of b; b = 8 is one plane of 8), each plane packed
flat, row-major over (rows of the class in token-id order, axes of the group), low bits of the
code in the first plane, values packed little-endian inside a byte (value k of a plane of
width w sits in byte k*w//8 at bit (k*w)%8).  `class_ids` is packed 4 bits per row (<= 16
classes), means and scales and codebooks are float16, the basis int8 (its per-axis fp scale is
folded into `scale`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from tensorgpt.common.files import write_atomic
from tensorgpt.tt_ops.bit_packing import pack_bits, unpack_bits

# Container of a coded table (safetensors, like the TT tables of tt_ops/storage.py).
FORMAT = "tensorgpt-tc"
FORMAT_VERSION = "3"  # 2: optional logit_bias; 3: optional logit_scale (1 and 2 are read too)
READABLE_VERSIONS = ("1", "2", "3")
DECODE_CHUNK_ROWS = 8192


@dataclasses.dataclass
class CodeGroup:
    """The axes of one class coded with the same bit width."""

    cls: int
    bits: int
    axes: np.ndarray  # int16 (m,): rows of `basis` / columns of `scale`
    codebook: np.ndarray  # float16 (2**bits,)
    planes: list  # [(width, uint8 packed array)], low bits first

    def codes(self, n_rows: int) -> np.ndarray:
        m = len(self.axes)
        out = np.zeros(n_rows * m, dtype=np.uint8)
        off = 0
        for w, p in self.planes:
            out |= (unpack_bits(p, w, n_rows * m) << off).astype(np.uint8)
            off += w
        return out.reshape(n_rows, m)

    def codes_of(self, first: int, stop: int) -> np.ndarray:
        """Codes of the class's rows first..stop-1 (positions among the class's rows), uint8
        (stop - first, m): only the bytes of the planes that hold them are unpacked."""
        m = len(self.axes)
        lo, hi = first * m, stop * m  # flat value range
        out = np.zeros(hi - lo, dtype=np.uint8)
        off = 0
        for w, p in self.planes:
            per = 8 // w  # values per byte; a value never straddles two bytes
            start = lo // per
            values = unpack_bits(p[start : -(-hi // per)], w, hi - start * per)[lo - start * per :]
            out |= (values << off).astype(np.uint8)
            off += w
        return out.reshape(stop - first, m)

    def nbytes(self) -> int:
        return self.axes.nbytes + self.codebook.nbytes + sum(p.nbytes for _, p in self.planes)


@dataclasses.dataclass
class TransformCodedTable:
    vocab_size: int
    dim: int
    class_ids: np.ndarray  # uint8 (V,); stored packed 4 bits/row
    means: np.ndarray  # float16 (C, D)
    scale: np.ndarray  # float16 (C, K): sigma_ci * basis_scale_i
    basis: np.ndarray  # int8 (K, D) (or float16 when basis_bits=16)
    groups: list  # [CodeGroup]
    row_gain: np.ndarray | None = None  # float16 (V,) or None
    logit_bias: np.ndarray | None = None  # float16 (V,): added to the tied head's logits
    # float16 (V,): the tied head's logit of v becomes a_v * (h . x^_v) + (1 - a_v) * (h .
    # means[class of v]) before the bias: a gain on the coded part of the row (head_gain.py)
    logit_scale: np.ndarray | None = None
    meta: dict = dataclasses.field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return int(self.means.shape[0])

    def class_rows(self, c: int) -> np.ndarray:
        return np.flatnonzero(self.class_ids == c)

    def nbytes(self) -> int:
        n = (self.vocab_size + 1) // 2 if self.n_classes <= 16 else self.vocab_size
        n += self.means.nbytes + self.scale.nbytes + self.basis.nbytes
        n += sum(g.nbytes() for g in self.groups)
        for extra in (self.row_gain, self.logit_bias, self.logit_scale):
            if extra is not None:
                n += extra.nbytes
        return int(n)

    def bits_per_weight(self) -> float:
        return 8.0 * self.nbytes() / (self.vocab_size * self.dim)

    def ratio(self) -> float:
        return 4.0 * self.vocab_size * self.dim / self.nbytes()

    def coefficients(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """(stop - start, K) float32 dequantized coefficients of rows start..stop-1 (default:
        all), already multiplied by `scale`; each value is the same whatever the range."""
        stop = self.vocab_size if stop is None else stop
        y = np.zeros((stop - start, self.basis.shape[0]), dtype=np.float32)
        for g in self.groups:
            rows = self.class_rows(g.cls)
            first, last = np.searchsorted(rows, [start, stop])  # the class's rows in range
            if first == last:
                continue
            vals = g.codebook.astype(np.float32)[g.codes_of(int(first), int(last))]
            vals *= self.scale[g.cls, g.axes].astype(np.float32)
            y[np.ix_(rows[first:last] - start, g.axes.astype(np.int64))] = vals
        return y

    def decode(self, rows=None) -> np.ndarray:
        """Decoded table (V, D) float32, or only `rows` (array of row indices).

        Built in chunks of DECODE_CHUNK_ROWS rows, each from its own coefficients, so the peak
        is the output and one chunk's coefficients (the same values as one whole-table
        product: BLAS computes each output row alone)."""
        if rows is None:
            x = np.empty((self.vocab_size, self.dim), dtype=np.float32)
            for s in range(0, self.vocab_size, DECODE_CHUNK_ROWS):
                stop = min(s + DECODE_CHUNK_ROWS, self.vocab_size)
                self._rows_into(x[s:stop], self.coefficients(s, stop), np.arange(s, stop))
            return x
        rows = np.asarray(rows, dtype=np.int64)
        if rows.ndim != 1 or (rows.size and (rows.min() < 0 or rows.max() >= self.vocab_size)):
            raise ValueError(f"rows: expected 1-D indices in [0, {self.vocab_size})")
        # a few rows (a parity check's tokens): each row's coefficients alone
        y = np.zeros((len(rows), self.basis.shape[0]), dtype=np.float32)
        for i, r in enumerate(rows):
            y[i] = self.coefficients(int(r), int(r) + 1)[0]
        x = np.empty((len(rows), self.dim), dtype=np.float32)
        for s in range(0, len(rows), DECODE_CHUNK_ROWS):
            chunk = slice(s, s + DECODE_CHUNK_ROWS)
            self._rows_into(x[chunk], y[chunk], rows[chunk])
        return x

    def decode_rows(self, start: int, stop: int) -> np.ndarray:
        """Rows start..stop-1 of `decode()`, (stop - start, D) float32, from their own
        coefficients (the same values when the range is a DECODE_CHUNK_ROWS chunk)."""
        if not 0 <= start <= stop <= self.vocab_size:
            raise ValueError(f"rows {start}..{stop}: need 0 <= start <= stop <= {self.vocab_size}")
        x = np.empty((stop - start, self.dim), dtype=np.float32)
        self._rows_into(x, self.coefficients(start, stop), np.arange(start, stop))
        return x

    def _rows_into(self, out: np.ndarray, y: np.ndarray, rows: np.ndarray) -> None:
        """out = y @ basis, times the rows' gains, plus their class means."""
        np.matmul(y, self.basis.astype(np.float32), out=out)
        if self.row_gain is not None:
            out *= self.row_gain[rows, None].astype(np.float32)
        out += self.means.astype(np.float32)[self.class_ids[rows].astype(np.int64)]

    def arrays(self) -> dict:
        """Flat name -> array dict (the storage layout; what an exporter writes)."""
        a = {
            "class_ids_packed": pack_bits(self.class_ids, 4)
            if self.n_classes <= 16
            else self.class_ids,
            "means": self.means,
            "scale": self.scale,
            "basis": self.basis,
        }
        if self.row_gain is not None:
            a["row_gain"] = self.row_gain
        if self.logit_bias is not None:
            a["logit_bias"] = self.logit_bias
        if self.logit_scale is not None:
            a["logit_scale"] = self.logit_scale
        for g in self.groups:
            key = f"g{g.cls}_b{g.bits}"
            a[f"{key}_axes"] = g.axes
            a[f"{key}_codebook"] = g.codebook
            for w, p in g.planes:
                a[f"{key}_plane{w}"] = p
        return a

    def save(self, path: str | Path) -> None:
        """One .safetensors file: `arrays()` plus the layout facts as JSON metadata."""
        from safetensors.numpy import save_file

        meta = dict(self.meta, vocab_size=self.vocab_size, dim=self.dim, n_classes=self.n_classes)
        meta["groups"] = [[g.cls, g.bits, [w for w, _ in g.planes]] for g in self.groups]
        tensors = {k: np.ascontiguousarray(v) for k, v in self.arrays().items()}
        metadata = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "tensorgpt": json.dumps(meta),
        }
        write_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def load_transform_code(path: str | Path) -> TransformCodedTable:
    """Read a table written by `TransformCodedTable.save`."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        header = f.metadata() or {}
        if header.get("format") != FORMAT:
            raise ValueError(f"{path} is not a transform-coded table (format {FORMAT!r})")
        if header.get("format_version") not in READABLE_VERSIONS:
            raise ValueError(
                f"{path}: format_version {header.get('format_version')!r} is not supported"
            )
        z = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    meta = json.loads(header["tensorgpt"])
    V, C = meta["vocab_size"], meta["n_classes"]
    cid = z["class_ids_packed"]
    cid = unpack_bits(cid, 4, V) if C <= 16 else cid
    groups = []
    for c, b, widths in meta["groups"]:
        key = f"g{c}_b{b}"
        planes = [(w, z[f"{key}_plane{w}"]) for w in widths]
        groups.append(CodeGroup(c, b, z[f"{key}_axes"], z[f"{key}_codebook"], planes))
    return TransformCodedTable(
        vocab_size=V,
        dim=meta["dim"],
        class_ids=cid.astype(np.uint8),
        means=z["means"],
        scale=z["scale"],
        basis=z["basis"],
        groups=groups,
        row_gain=z.get("row_gain"),
        logit_bias=z.get("logit_bias"),
        logit_scale=z.get("logit_scale"),
        meta={k: v for k, v in meta.items() if k not in ("groups",)},
    )
