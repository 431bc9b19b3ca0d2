"""ONNX subgraph for a transform-coded table (tt_ops/transform_code.py).

    x_v = means[c] + sum_j codebook[c,b][code_v,j] * scale[c, a_j] * basis[a_j, :]

The whole table is decoded by ops over initializers only (BitShift/BitwiseAnd unpacking of
the bit planes, Gather into the codebooks, Mul by the scales, MatMul with the int8 basis,
Add of the class mean), so onnxruntime decodes it once at session load; the input embedding
is then one Gather from it and the tied head a Gemm with it.

Rows come out grouped by class (each class's rows in token-id order); the permutation back
to token order is computed in the graph from the 4-bit class ids (a running count per class
plus each class's offset), so no index array is stored.
"""

from __future__ import annotations

import numpy as np

from tensorgpt.export.embedding_graph import EmbeddingGraph
from tensorgpt.export.graph_builder import GraphBuilder
from tensorgpt.tt_ops.transform_code import TransformCodedTable

FLOAT, INT64 = 1, 7


def _unpack(b: GraphBuilder, packed: str, width: int, count: int) -> str:
    """Flat little-endian `width`-bit values of a uint8 array, as uint8 (count,)."""
    if width == 8:
        return b.op(
            "Slice",
            [packed, b.ints("zero", [0]), b.ints(f"n{count}", [count]), b.ints("axis0", [0])],
        )
    per = 8 // width
    shifts = b.const(f"shifts{width}", (np.arange(per) * width).astype(np.uint8))
    mask = b.const(f"mask{width}", np.array((1 << width) - 1, np.uint8))
    column = b.op("Unsqueeze", [packed, b.ints("axis1", [1])])
    values = b.op("BitwiseAnd", [b.op("BitShift", [column, shifts], direction="RIGHT"), mask])
    flat = b.op("Reshape", [values, b.ints("flat", [-1])])
    return b.op(
        "Slice", [flat, b.ints("zero", [0]), b.ints(f"n{count}", [count]), b.ints("axis0", [0])]
    )


class TransformCodedEmbedding(EmbeddingGraph):
    def __init__(self, code: TransformCodedTable) -> None:
        if code.row_gain is not None:
            raise ValueError("transform code with per-row gains is not exportable yet")
        if code.n_classes > 16:
            raise ValueError(f"transform code: at most 16 classes, got {code.n_classes}")
        self.code = code
        self.vocab_size, self.dim = code.vocab_size, code.dim
        self._table: str | None = None

    def rows(self, b: GraphBuilder, ids: str) -> str:
        return b.op("Gather", [self.table(b), ids], axis=0)

    def table(self, b: GraphBuilder) -> str:
        if self._table is None:
            self._table = self._build(b)
        return self._table

    def dense(self) -> np.ndarray:
        return self.code.decode().astype(np.float32)

    def _build(self, b: GraphBuilder) -> str:
        code = self.code
        arrays = code.arrays()
        basis = b.op("Cast", [b.const("basis", arrays["basis"])], to=FLOAT)
        scale = b.op("Cast", [b.const("scale", arrays["scale"])], to=FLOAT)
        means = b.op("Cast", [b.const("means", arrays["means"])], to=FLOAT)
        class_ids = self._class_ids(b, arrays["class_ids_packed"])
        sizes = np.bincount(code.class_ids, minlength=code.n_classes)
        blocks = []
        for c in range(code.n_classes):
            n_c = int(sizes[c])
            if n_c == 0:
                continue
            mean = b.op("Gather", [means, b.ints(f"class{c}", [c])], axis=0)  # (1, D)
            x = b.op("Expand", [mean, b.ints(f"rows{c}", [n_c, self.dim])])
            for g in (g for g in code.groups if g.cls == c):
                x = b.op("Add", [x, self._group(b, g, n_c, c, basis, scale)])
            blocks.append(x)
        grouped = blocks[0] if len(blocks) == 1 else b.op("Concat", blocks, axis=0)
        return b.op("Gather", [grouped, self._order(b, class_ids, code.n_classes)], axis=0)

    def _group(self, b: GraphBuilder, g, n_rows: int, c: int, basis: str, scale: str) -> str:
        """(n_rows, D): the coefficients of the axes coded with g.bits bits, times their basis rows."""
        key, m = f"g{c}_b{g.bits}", len(g.axes)
        codes, shift = None, 0
        for width, plane in g.planes:
            part = _unpack(b, b.const(f"{key}_plane{width}", plane), width, n_rows * m)
            if shift:
                part = b.op(
                    "BitShift",
                    [part, b.const(f"shift_by{shift}", np.array(shift, np.uint8))],
                    direction="LEFT",
                )
            codes = part if codes is None else b.op("BitwiseOr", [codes, part])
            shift += width
        codes = b.op(
            "Reshape", [b.op("Cast", [codes], to=INT64), b.ints(f"{key}_shape", [n_rows, m])]
        )
        codebook = b.op("Cast", [b.const(f"{key}_codebook", g.codebook)], to=FLOAT)
        values = b.op("Gather", [codebook, codes], axis=0)  # (n_rows, m)
        axes = b.op("Cast", [b.const(f"{key}_axes", g.axes)], to=INT64)
        scale_row = b.op(
            "Gather", [scale, b.const(f"class{c}_index", np.array(c, np.int64))], axis=0
        )  # (K,)
        class_scale = b.op("Gather", [scale_row, axes], axis=0)  # (m,)
        coefficients = b.op("Mul", [values, class_scale])
        return b.op("MatMul", [coefficients, b.op("Gather", [basis, axes], axis=0)])

    def _class_ids(self, b: GraphBuilder, packed: np.ndarray) -> str:
        ids = _unpack(b, b.const("class_ids_packed", packed), 4, self.vocab_size)
        return b.op("Cast", [ids], to=INT64)

    def _order(self, b: GraphBuilder, class_ids: str, n_classes: int) -> str:
        """For each token v: offset[class v] + number of earlier tokens of the same class."""
        column = b.op("Unsqueeze", [class_ids, b.ints("axis1", [1])])
        onehot = b.op(
            "Cast",
            [b.op("Equal", [column, b.const("class_range", np.arange(n_classes, dtype=np.int64))])],
            to=INT64,
        )
        before = b.op(
            "CumSum", [onehot, b.const("axis0_scalar", np.array(0, np.int64))], exclusive=1
        )
        rank = b.op("ReduceSum", [b.op("Mul", [onehot, before]), b.ints("axis1", [1])], keepdims=0)
        totals = b.op("ReduceSum", [onehot, b.ints("axis0", [0])], keepdims=0)
        offsets = b.op(
            "CumSum", [totals, b.const("axis0_scalar", np.array(0, np.int64))], exclusive=1
        )
        return b.op("Add", [rank, b.op("Gather", [offsets, class_ids], axis=0)])
