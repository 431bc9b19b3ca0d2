"""ONNX subgraphs that turn token ids into embedding rows, one class per storage format.

Each format answers three questions:
- `rows(b, ids)`: ops mapping int64 ids (batch, seq) to rows (batch, seq, D);
- `table(b)`: ops rebuilding the whole (V, D) table for a tied LM head. Their inputs are
  initializers only, so onnxruntime folds them once when the session is created and the
  file itself never holds a dense V x D matrix;
- `dense()`: the same table in numpy, which PyTorch runs for the built-in verification
  (`decoded()` caches it).

The tensor-train formats live in export/embedding_tt.py, the transform code in
export/embedding_transform_code.py. Only standard ops appear: Gather, Reshape, Transpose, MatMul, Slice, Div, Mod, Cast, Mul
(plus Unsqueeze, Concat, Sub, BitwiseAnd, BitShift to unpack 4-bit codes).
"""

from __future__ import annotations

import copy

import numpy as np

from tensorgpt.export.graph_builder import GraphBuilder, nibble_pairs
from tensorgpt.tt_ops.low_rank import truncated_svd
from tensorgpt.tt_ops.row_codecs import (
    INT4_BLOCK,
    dequantize_int4_blocks,
    dequantize_int8,
    quantize_int4_blocks,
    quantize_int8,
)


class EmbeddingGraph:
    vocab_size: int
    dim: int

    def rows(self, b: GraphBuilder, ids: str) -> str:
        raise NotImplementedError

    def table(self, b: GraphBuilder) -> str:
        """Default: the rows of every id, 0..V-1, from a constant id list (folded at load)."""
        all_ids = b.const("all_ids", np.arange(self.vocab_size, dtype=np.int64)[None, :])
        rows = self.rows(b, all_ids)  # (1, V, D)
        return b.op("Reshape", [rows, b.ints("table_shape", [self.vocab_size, self.dim])])

    def table_rows(self, b: GraphBuilder, start: int, stop: int, after: str = "") -> str:
        """Rows start..stop-1 of the table, (stop - start, D), from initializers only.

        What `--runtime packed` quantizes chunk by chunk (export/packed/table.py), so that no
        (V, D) float table exists at load. `after`: a tensor these rows must wait for (the
        previous chunk's result; see `wait_for`). Default: the rows of a constant id range."""
        ids = b.const(f"ids_{start}_{stop}", np.arange(start, stop, dtype=np.int64)[None, :])
        ids = wait_for(b, ids, after)
        rows = self.rows(b, ids)  # (1, n, D)
        return b.op("Reshape", [rows, b.ints(f"rows_{stop - start}", [stop - start, self.dim])])

    def dense(self) -> np.ndarray:
        """Compute the (V, D) float32 table the graph rebuilds (subclasses say how)."""
        raise NotImplementedError

    def dense_rows(self, start: int, stop: int) -> np.ndarray:
        """Rows start..stop-1 of `dense()`, (stop - start, D) float32. Default: a slice of
        `decoded()`; a format that can decode a slice alone overrides it, so the metrics
        of a large table never need the whole decoded table (export/compress.py)."""
        return self.decoded()[start:stop]

    def logit_fix(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(scale, bias), each (V,) float16 or None: a tied head's logits become
        logits * scale + (1 - scale) * class_logits + bias (a correction for the table's
        coding error, e.g. the transform code's logit gain and bias, tt_ops/transform_code.py).
        Default: none."""
        return None, None

    def logit_anchor(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(rows (C, D) float32, index (V,) int64) when `scale` applies only beyond an anchor
        row per token: class_logits[..., v] = hidden . rows[index[v]] (the transform code's
        class means). None (default): class_logits = 0, the whole logit is scaled."""
        return None

    def anchor_logits(self, store: GraphBuilder, b: GraphBuilder, hidden: str) -> str | None:
        """Graph of class_logits (hidden (..., D) -> (..., V)), its initializers in `store`;
        None without an anchor."""
        return None

    def decoded(self) -> np.ndarray:
        """`dense()`, computed once: the metrics and the PyTorch verification both need it,
        and for TT or tc it means rebuilding the whole table."""
        if getattr(self, "_decoded", None) is None:
            self._decoded = self.dense()
        return self._decoded

    def fresh(self) -> EmbeddingGraph:
        """A shallow copy holding the code only (the same arrays): no decoded table, and it
        adds its initializers to the next builder it is given. A streaming export holds no
        dense table while it writes, and its parity check builds a second, smaller file with
        the table the first one coded.

        The convention it relies on: a format keeps its code in public attributes and, in
        private ones (`_name`, `_cores`, ...), only what it made in one builder or computed
        from the code, None until then."""
        twin = copy.copy(self)
        for name in vars(twin):
            if name.startswith("_"):
                setattr(twin, name, None)
        return twin


def wait_for(b: GraphBuilder, value: str, after: str) -> str:
    """`value` (int64) plus a zero computed from the shape of `after`: the same values, but
    onnxruntime cannot start what reads them before `after` exists. Without it, the plain
    (unoptimized) run of the split loader computed every chunk's float rows before
    quantizing any (decode.onnx of SmolLM2's tc table peaked at 297 MB instead of 217 MB).
    Folded away when the whole model.onnx is loaded."""
    if not after:
        return value
    rows = b.op("Shape", [after], start=0, end=1)  # (1,) int64
    return b.op("Add", [value, b.op("Mul", [rows, b.ints("zero1", [0])])])


class DenseEmbedding(EmbeddingGraph):
    """The uncompressed table: one Gather."""

    def __init__(self, table: np.ndarray) -> None:
        self.weight = np.asarray(table, dtype=np.float32)
        self.vocab_size, self.dim = self.weight.shape
        self._name: str | None = None

    def _initializer(self, b: GraphBuilder) -> str:
        if self._name is None:  # one copy shared by the input Gather and a tied head
            self._name = b.const("weight", self.weight)
        return self._name

    def rows(self, b: GraphBuilder, ids: str) -> str:
        return b.op("Gather", [self._initializer(b), ids], axis=0)

    def table(self, b: GraphBuilder) -> str:
        return self._initializer(b)

    def dense(self) -> np.ndarray:
        return self.weight


class LowRankEmbedding(EmbeddingGraph):
    """Truncated SVD: table ~ U (V, k) @ W (k, D), W = diag(s) V^T; a row is Gather + MatMul."""

    def __init__(self, table: np.ndarray, rank: int) -> None:
        self.vocab_size, self.dim = table.shape
        self.left, self.right = truncated_svd(table, rank)
        self._names: tuple[str, str] | None = None

    def _initializers(self, b: GraphBuilder) -> tuple[str, str]:
        if self._names is None:
            self._names = (b.const("left", self.left), b.const("right", self.right))
        return self._names

    def rows(self, b: GraphBuilder, ids: str) -> str:
        left, right = self._initializers(b)
        return b.op("MatMul", [b.op("Gather", [left, ids], axis=0), right])

    def table(self, b: GraphBuilder) -> str:
        left, right = self._initializers(b)
        return b.op("MatMul", [left, right])

    def dense(self) -> np.ndarray:
        return self.left @ self.right


class RowQuantizedEmbedding(EmbeddingGraph):
    """Scalar quantization of the table, the baseline users reach for first.

    bits=8: int8 codes, one fp16 absmax scale per row.
    bits=4: codes in [-8, 7] packed two per uint8 (low nibble first, +8 offset), one fp16
        scale per block of 32 columns (the llama.cpp Q4_0 / onnxruntime block-32 grid).
    Decoding is Cast, BitwiseAnd/BitShift and Mul, which onnxruntime folds for the tied head
    (it would not fold DequantizeLinear, and would redo the whole table at every token).
    """

    BLOCK = INT4_BLOCK

    def __init__(self, table: np.ndarray, bits: int) -> None:
        table = np.asarray(table, dtype=np.float32)
        self.vocab_size, self.dim = table.shape
        self.bits = bits
        if bits == 8:
            self.codes, scale = quantize_int8(table, (1,))
            self.scale = scale[:, 0]  # (V,)
        elif bits == 4:
            self.codes, self.scale = quantize_int4_blocks(table)  # (V, D/2), (V, D/32)
        else:
            raise ValueError(f"bits must be 4 or 8, got {bits}")
        self._names: tuple[str, str] | None = None

    def _initializers(self, b: GraphBuilder) -> tuple[str, str]:
        if self._names is None:
            self._names = (b.const(f"int{self.bits}", self.codes), b.const("scale", self.scale))
        return self._names

    def _decode(self, b: GraphBuilder, codes: str, scale: str) -> str:
        """(..., packed) codes and (..., groups) scales -> (..., D) float rows."""
        scale = b.op("Cast", [scale], to=1)
        if self.bits == 8:
            return b.op(
                "Mul",
                [b.op("Cast", [codes], to=1), b.op("Unsqueeze", [scale, b.ints("last", [-1])])],
            )
        pairs = nibble_pairs(b, codes, axis=-1)  # (..., D/2, 2): columns 2i and 2i+1
        last = b.ints("unsqueeze_last", [-1])
        values = b.op(
            "Sub", [b.op("Cast", [pairs], to=1), b.const("offset", np.array(8, np.float32))]
        )
        grouped = b.op(
            "Reshape", [values, b.ints("grouped", [0, 0, self.dim // self.BLOCK, self.BLOCK])]
        )
        scaled = b.op("Mul", [grouped, b.op("Unsqueeze", [scale, last])])
        return b.op("Reshape", [scaled, b.ints("rows", [0, 0, self.dim])])

    def rows(self, b: GraphBuilder, ids: str) -> str:
        codes, scale = self._initializers(b)
        return self._decode(
            b, b.op("Gather", [codes, ids], axis=0), b.op("Gather", [scale, ids], axis=0)
        )

    def table(self, b: GraphBuilder) -> str:
        codes, scale = self._initializers(b)
        if self.bits == 8:
            return self._decode(b, codes, scale)
        # the 4-bit decoder expects two leading axes, as rows have (batch, seq)
        lead = b.ints("lead", [1, self.vocab_size, -1])
        rows = self._decode(b, b.op("Reshape", [codes, lead]), b.op("Reshape", [scale, lead]))
        return b.op("Reshape", [rows, b.ints("table_shape", [self.vocab_size, self.dim])])

    def dense(self) -> np.ndarray:
        if self.bits == 8:
            return dequantize_int8(self.codes, self.scale[:, None])
        return dequantize_int4_blocks(self.codes, self.scale)
