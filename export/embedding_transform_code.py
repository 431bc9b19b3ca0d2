"""ONNX subgraph for a transform-coded table (tt_ops/transform_code.py).

    x_v = means[c] + sum_j codebook[c,b][code_v,j] * scale[c, a_j] * basis[a_j, :]

The whole table is decoded by ops over initializers only, so onnxruntime decodes it once at
session load; the input embedding is then one Gather from it and the tied head a Gemm with it.

onnxruntime keeps every folded tensor until its constant-folding pass is over, so the session's
peak memory is about the sum of all the decode's outputs (docs/quality_notes.md, "Load-time
memory"). The decode is therefore laid out to touch each coefficient few times, and in uint8
wherever it can:

1. per (class, bit width) group, the bit planes are unpacked (BitShift/BitwiseAnd/BitwiseOr,
   uint8) into codes (n_c, m);
2. per class, the groups' codes are placed in one common column layout (uint8 Gather along
   columns): the K axes of `basis`, then one indicator column per class; axes the class
   does not code, and the indicator columns, get code 0;
3. the classes' rows are concatenated and put back into token order (uint8 Gather; the
   permutation is computed in the graph from the 4-bit class ids: a running count per class
   plus each class's offset, so no index array is stored);
4. one Cast to int32 plus the row's class offset (class * R, R = 2**max bits) indexes a small
   table T (C*R, K + C) with GatherElements: T[c*R + v, a] = codebook[c,b][v] * scale[c, a]
   (the product the table decode has always used), 0 for axes class c does not code, and
   T[c*R + 0, K + c] = 1 for class c's own indicator column;
5. one MatMul with [basis; means] (K + C, D) gives the (V, D) table, means included.

A code fitted with a head mean also carries `logit_bias` (V,) fp16, which the tied head adds
to its logits, and one fitted with head states `logit_scale` a (V,) fp16, the gain of each
row's coded part: logits * a + (1 - a) * (hidden . means[class]) (export/assemble.py
apply_logit_fix).

Per coefficient that is a few uint8 passes, one int32 index, one float coefficient and the
table itself, instead of int64 codes, float copies and a (rows, D) MatMul and Add per group.
The values match `TransformCodedTable.decode()` up to float summation order (the table comes
out of one MatMul over all axes instead of one per bit width).
"""

from __future__ import annotations

import numpy as np

from tensorgpt.export.embedding_graph import EmbeddingGraph, wait_for
from tensorgpt.export.graph_builder import GraphBuilder
from tensorgpt.tt_ops.transform_code import TransformCodedTable

FLOAT, INT32, INT64 = 1, 6, 7


def _unpack(b: GraphBuilder, name: str, packed: np.ndarray, width: int, shape: list[int]) -> str:
    """Little-endian `width`-bit values of a flat uint8 array, as uint8 of `shape`.

    The initializer is stored already shaped (bytes, 1) so that no Unsqueeze is folded; the
    Slice is only there when the last byte is padding."""
    count = int(np.prod(shape))
    if width == 8:
        return b.const(name, np.ascontiguousarray(packed).reshape(shape))
    per = 8 // width
    column = b.const(name, np.ascontiguousarray(packed).reshape(-1, 1))
    shifts = b.const(f"shifts{width}", (np.arange(per) * width).astype(np.uint8))
    mask = b.const(f"mask{width}", np.array((1 << width) - 1, np.uint8))
    values = b.op("BitwiseAnd", [b.op("BitShift", [column, shifts], direction="RIGHT"), mask])
    if len(packed) * per != count:
        flat = b.op("Reshape", [values, b.ints("flat", [-1])])
        values = b.op(
            "Slice",
            [flat, b.ints("zero", [0]), b.ints(f"n{count}", [count]), b.ints("axis0", [0])],
        )
    return b.op("Reshape", [values, b.ints(f"shape_{'x'.join(map(str, shape))}", shape)])


class TransformCodedEmbedding(EmbeddingGraph):
    def __init__(self, code: TransformCodedTable) -> None:
        if code.row_gain is not None:
            raise ValueError("transform code with per-row gains is not exportable yet")
        if code.n_classes > 16:
            raise ValueError(f"transform code: at most 16 classes, got {code.n_classes}")
        self.code = code
        self.vocab_size, self.dim = code.vocab_size, code.dim
        # rows(): decode only the gathered rows (steps 4-5 after the Gather) instead of
        # gathering from the decoded table. The streaming layer check of an untied head sets
        # it (export/verify_layers.py): its session does not fold the decode, so the default
        # would decode the whole table at every step (a 7B table: 3 x 2.2 GB).
        self.rows_from_codes = False
        self._table: str | None = None
        self._layout_names: list | None = None
        self._table_names: tuple[str, str, int] | None = None
        self._code_names: tuple[str, str] | None = None

    def rows(self, b: GraphBuilder, ids: str) -> str:
        if not self.rows_from_codes:
            return b.op("Gather", [self.table(b), ids], axis=0)
        codes, class_ids = self._codes(b)
        flat = b.op("Reshape", [ids, b.ints("flat", [-1])])
        rows = self._decode(
            b,
            b.op("Gather", [codes, flat], axis=0),
            b.op("Gather", [class_ids, flat], axis=0),
            self._tables(b),
        )  # (n, D)
        shape = b.op("Concat", [b.op("Shape", [ids]), b.ints(f"dim{self.dim}", [self.dim])], axis=0)
        return b.op("Reshape", [rows, shape])

    def table(self, b: GraphBuilder) -> str:
        if self._table is None:
            self._table = self._build(b)
        return self._table

    def dense(self) -> np.ndarray:
        return self.code.decode().astype(np.float32)

    def dense_rows(self, start: int, stop: int) -> np.ndarray:
        # rows from their own codes: the metrics never hold the whole decoded table
        return self.code.decode_rows(start, stop)

    def table_rows(self, b: GraphBuilder, start: int, stop: int, after: str = "") -> str:
        """Rows start..stop-1: steps 4-5 on a row slice of the uint8 codes (the only (V, .)
        tensors before them are uint8 codes and the class ids), same ops as `table`."""
        codes, class_ids = self._codes(b)
        first = wait_for(b, b.ints(f"start{start}", [start]), after)
        at = [first, b.ints(f"stop{stop}", [stop]), b.ints("axis0", [0])]
        return self._decode(
            b, b.op("Slice", [codes, *at]), b.op("Slice", [class_ids, *at]), self._tables(b)
        )

    def logit_fix(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        # the tied head's per-row gain and bias (tt_ops/transform_code.py, head_gain.py)
        return self.code.logit_scale, self.code.logit_bias

    def logit_anchor(self) -> tuple[np.ndarray, np.ndarray] | None:
        # the gain leaves each row's class mean alone (tt_ops/head_gain.py)
        if self.code.logit_scale is None:
            return None
        return self.code.means.astype(np.float32), self.code.class_ids.astype(np.int64)

    def anchor_logits(self, store: GraphBuilder, b: GraphBuilder, hidden: str) -> str | None:
        """hidden . means[class of v] for every v: one MatMul to C class logits and a Gather by
        the class ids the table decode already unpacks (the same tensors: no new bytes)."""
        if self.code.logit_scale is None:
            return None
        means = store.op("Cast", [store.const("means", self.code.arrays()["means"])], to=FLOAT)
        _, class_ids = self._codes(store)
        index = store.op("Cast", [class_ids], to=INT64)
        per_class = b.op("MatMul", [hidden, store.op("Transpose", [means])])  # (..., C)
        return b.op("Gather", [per_class, index], axis=-1)  # (..., V)

    def _build(self, b: GraphBuilder) -> str:
        codes, class_ids = self._codes(b)
        return self._decode(b, codes, class_ids, self._tables(b))

    def _decode(self, b: GraphBuilder, codes: str, class_ids: str, tables: tuple) -> str:
        """Steps 4-5: (n, width) uint8 codes in token order and their (n,) class ids -> rows."""
        table, basis_means, rows_per_class = tables
        offset = b.op(
            "Mul",
            [
                b.op("Cast", [class_ids], to=INT32),
                b.const("rows", np.array(rows_per_class, np.int32)),
            ],
        )
        index = b.op(
            "Add",
            [
                b.op("Cast", [codes], to=INT32),
                b.op("Unsqueeze", [offset, b.ints("axis1", [1])]),
            ],
        )  # (n, width) int32
        coefficients = b.op("GatherElements", [table, index], axis=0)  # (n, width) float
        return b.op("MatMul", [coefficients, basis_means])

    def _layout(self, b: GraphBuilder) -> list[tuple[list, list[str], str]]:
        """Per class, built once: (its groups, their axes as int64 tensors, its columns)."""
        if self._layout_names is None:
            code = self.code
            n_classes, n_axes = code.n_classes, code.basis.shape[0]
            self._layout_names = []
            for c in range(n_classes):
                groups = [g for g in code.groups if g.cls == c]
                axes = [
                    b.op("Cast", [b.const(f"g{c}_b{g.bits}_axes", g.axes)], to=INT64)
                    for g in groups
                ]
                m = sum(len(g.axes) for g in groups)
                columns = self._columns(b, axes, m, c, n_axes + n_classes, n_classes)
                self._layout_names.append((groups, axes, columns))
        return self._layout_names

    def _tables(self, b: GraphBuilder) -> tuple[str, str, int]:
        """Built once: the (C*R, width) coefficient table T, [basis; means] and R."""
        if self._table_names is None:
            code = self.code
            arrays = code.arrays()
            rows_per_class = 1 << max((g.bits for g in code.groups), default=0)
            scale = b.op("Cast", [b.const("scale", arrays["scale"])], to=FLOAT)
            tables = [
                self._class_table(b, groups, axes, c, scale, columns, rows_per_class)
                for c, (groups, axes, columns) in enumerate(self._layout(b))
            ]
            table = tables[0] if len(tables) == 1 else b.op("Concat", tables, axis=0)
            basis = b.op("Cast", [b.const("basis", arrays["basis"])], to=FLOAT)
            means = b.op("Cast", [b.const("means", arrays["means"])], to=FLOAT)
            basis_means = b.op("Concat", [basis, means], axis=0)
            self._table_names = (table, basis_means, rows_per_class)
        return self._table_names

    def _codes(self, b: GraphBuilder) -> tuple[str, str]:
        """Steps 1-3, built once: (V, width) uint8 codes in token order, (V,) int64 classes."""
        if self._code_names is None:
            code = self.code
            sizes = np.bincount(code.class_ids, minlength=code.n_classes)
            class_codes = [
                self._class_codes(b, groups, c, int(sizes[c]), columns)
                for c, (groups, _, columns) in enumerate(self._layout(b))
                if sizes[c]
            ]
            grouped = (
                class_codes[0] if len(class_codes) == 1 else b.op("Concat", class_codes, axis=0)
            )
            class_ids = self._class_ids(b, code.arrays()["class_ids_packed"])
            codes = b.op("Gather", [grouped, self._order(b, class_ids, code.n_classes)], axis=0)
            self._code_names = (codes, class_ids)
        return self._code_names

    @staticmethod
    def _columns(
        b: GraphBuilder, axes: list[str], m: int, c: int, width: int, n_classes: int
    ) -> str:
        """(K + C,) int64: where class c keeps each coefficient column: a column of its groups
        (in group order), m (the class's coded axes: a zero column) or m + 1 (its mean column).
        Scattered in the graph from the stored axes, so it costs no file bytes."""
        fill = b.op(
            "Expand", [b.const(f"m{m}", np.array(m, np.int64)), b.ints(f"n{width}", [width])]
        )
        one = b.const("one", np.array(1, np.int64))
        positions = b.op(
            "Range",
            [
                b.const("zero_scalar", np.array(0, np.int64)),
                b.const(f"m{m}", np.array(m, np.int64)),
                one,
            ],
        )
        mean_column = b.ints(f"column{width - n_classes + c}", [width - n_classes + c])
        targets = b.op("Concat", [*axes, mean_column], axis=0)
        values = b.op("Concat", [positions, b.ints(f"m{m}_plus1", [m + 1])], axis=0)
        return b.op("ScatterElements", [fill, targets, values], axis=0)

    def _class_table(
        self,
        b: GraphBuilder,
        groups: list,
        axes: list[str],
        c: int,
        scale: str,
        columns: str,
        rows: int,
    ) -> str:
        """(rows, width) float: codebook value times scale for each code and column of class
        c; then a zero column and the mean column's indicator (1 for code 0)."""
        scale_row = b.op(
            "Gather", [scale, b.const(f"class{c}_index", np.array(c, np.int64))], axis=0
        )  # (K,)
        parts = []
        for g, group_axes in zip(groups, axes):
            key = f"g{c}_b{g.bits}"
            codebook = b.op("Cast", [b.const(f"{key}_codebook", g.codebook)], to=FLOAT)
            if len(g.codebook) < rows:  # rows past 2**bits are never indexed: pad with zeros
                pads = b.ints(f"pad{rows - len(g.codebook)}", [0, rows - len(g.codebook)])
                codebook = b.op("Pad", [codebook, pads])
            values = b.op(
                "Mul",
                [
                    b.op("Unsqueeze", [codebook, b.ints("axis1", [1])]),
                    b.op("Gather", [scale_row, group_axes], axis=0),
                ],
            )  # (rows, m_g)
            parts.append(values)
        # the zero column and the mean column (1 for code 0), padded with zeros to `rows`
        indicator = b.const("zero_and_indicator", np.array([[0.0, 1.0]], np.float32))
        if rows > 1:
            indicator = b.op("Pad", [indicator, b.ints(f"pad_rows{rows - 1}", [0, 0, rows - 1, 0])])
        parts.append(indicator)
        stacked = parts[0] if len(parts) == 1 else b.op("Concat", parts, axis=1)
        return b.op("Gather", [stacked, columns], axis=1)

    def _class_codes(self, b: GraphBuilder, groups: list, c: int, n_rows: int, columns: str) -> str:
        """(n_rows, width) uint8 codes of class c in the common column layout (0 elsewhere)."""
        parts = [self._group_codes(b, g, n_rows) for g in groups]
        parts.append(
            b.op(
                "Expand",
                [
                    b.const("zero_code", np.zeros((1, 1), np.uint8)),
                    b.ints(f"zeros{n_rows}", [n_rows, 1]),
                ],
            )
        )
        stacked = parts[0] if len(parts) == 1 else b.op("Concat", parts, axis=1)
        m = sum(len(g.axes) for g in groups)  # the zero column: the mean column's code is 0
        code_columns = b.op("Min", [columns, b.const(f"m{m}", np.array(m, np.int64))])
        return b.op("Gather", [stacked, code_columns], axis=1)

    def _group_codes(self, b: GraphBuilder, g, n_rows: int) -> str:
        """(n_rows, m) uint8 codes of a group, from its bit planes (low bits first)."""
        key, shape = f"g{g.cls}_b{g.bits}", [n_rows, len(g.axes)]
        codes, shift = None, 0
        for width, plane in g.planes:
            part = _unpack(b, f"{key}_plane{width}", plane, width, shape)
            if shift:
                part = b.op(
                    "BitShift",
                    [part, b.const(f"shift_by{shift}", np.array(shift, np.uint8))],
                    direction="LEFT",
                )
            codes = part if codes is None else b.op("BitwiseOr", [codes, part])
            shift += width
        return codes

    def _class_ids(self, b: GraphBuilder, packed: np.ndarray) -> str:
        ids = _unpack(b, "class_ids_packed", packed, 4, [self.vocab_size])
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
