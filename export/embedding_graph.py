"""ONNX subgraphs that turn token ids into embedding rows, one class per storage format.

Each format answers three questions:
- `rows(b, ids)`: ops mapping int64 ids (batch, seq) to rows (batch, seq, D);
- `table(b)`: ops rebuilding the whole (V, D) table for a tied LM head. Their inputs are
  initializers only, so onnxruntime folds them once when the session is created and the
  file itself never holds a dense V x D matrix;
- `dense()`: the same table in numpy, which PyTorch runs for the built-in verification.

Only standard ops appear: Gather, Reshape, Transpose, MatMul, Slice, Div, Mod, Cast, Mul.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np
from tensorgpt.export.graph_builder import GraphBuilder

if TYPE_CHECKING:
    from tensorgpt.tt_ops.per_token import PerTokenTT
    from tensorgpt.tt_ops.tt_matrix import TTMatrix


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

    def dense(self) -> np.ndarray:
        raise NotImplementedError


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


def _store_core(b: GraphBuilder, name: str, core: np.ndarray, int8: bool, scale_axes: tuple) -> str:
    """A float32 core, or int8 codes with fp16 absmax scales decoded by Cast and Mul.

    Cast and Mul over initializers fold at session load (DequantizeLinear would not), so the
    int8 file costs nothing per token once loaded.
    """
    if not int8:
        return b.const(name, core.astype(np.float32))
    codes, scale = quantize_int8(core, scale_axes)
    decoded = b.op("Cast", [b.const(f"{name}.int8", codes)], to=1)  # 1 = FLOAT
    scale_f = b.op("Cast", [b.const(f"{name}.scale", scale)], to=1)
    return b.op("Mul", [decoded, scale_f])


def quantize_int8(core: np.ndarray, reduce_axes: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric absmax int8 over `reduce_axes`; scales kept in float16."""
    absmax = np.max(np.abs(core), axis=reduce_axes, keepdims=True)
    scale = (absmax / 127.0).astype(np.float16)
    safe = np.where(scale == 0, np.float16(1), scale).astype(np.float32)
    codes = np.clip(np.rint(core / safe), -127, 127).astype(np.int8)
    return codes, scale


def dequantize_int8(codes: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return codes.astype(np.float32) * scale.astype(np.float32)


def _contract(
    b: GraphBuilder, gathered: list[str], ranks: list[int], modes: list[int], dim: int
) -> str:
    """Contract gathered cores (batch, seq, r_{k-1}, n_k, r_k) left to right into (batch, seq, D).

    x_1 = G_1 as (n_1, r_1); x_k = (x_{k-1} @ G_k as (r_{k-1}, n_k r_k)) as (n_1..n_k, r_k):
    the first mode is the most significant digit of the output index (C order), as in tt_ops.
    """
    x = b.op("Reshape", [gathered[0], b.ints("shape_0", [0, 0, modes[0], ranks[1]])])
    size = modes[0]
    for k in range(1, len(gathered)):
        core = b.op(
            "Reshape",
            [gathered[k], b.ints(f"shape_{k}", [0, 0, ranks[k], modes[k] * ranks[k + 1]])],
        )
        x = b.op("MatMul", [x, core])
        size *= modes[k]
        x = b.op("Reshape", [x, b.ints(f"shape_{k}_out", [0, 0, size, ranks[k + 1]])])
    x = b.op("Reshape", [x, b.ints("shape_rows", [0, 0, size])])
    if size > dim:  # zero padding to the next power of two: keep the first D entries
        x = b.op(
            "Slice",
            [x, b.ints("slice_start", [0]), b.ints("slice_end", [dim]), b.ints("slice_axis", [2])],
        )
    return x


class PerTokenTTEmbedding(EmbeddingGraph):
    """TensorGPT: every row is its own MPS; core k stored as (V, r_{k-1}, n_k, r_k)."""

    def __init__(self, tt: PerTokenTT, int8: bool = False) -> None:
        self.tt = tt
        self.int8 = int8
        self.vocab_size, self.dim = tt.vocab_size, tt.dim
        self._cores: list[str] | None = None

    def _core_names(self, b: GraphBuilder) -> list[str]:
        if self._cores is None:
            self._cores = [
                _store_core(b, f"core_{k}", c, self.int8, (1, 2, 3))
                for k, c in enumerate(self.tt.cores)
            ]
        return self._cores

    def rows(self, b: GraphBuilder, ids: str) -> str:
        gathered = [b.op("Gather", [core, ids], axis=0) for core in self._core_names(b)]
        return _contract(b, gathered, list(self.tt.ranks), list(self.tt.mode_sizes), self.dim)

    def dense(self) -> np.ndarray:
        if not self.int8:
            return self.tt.reconstruct().astype(np.float32)
        cores = [dequantize_int8(*quantize_int8(c, (1, 2, 3))) for c in self.tt.cores]
        return dataclasses.replace(self.tt, cores=cores).reconstruct().astype(np.float32)


class TTMatrixEmbedding(EmbeddingGraph):
    """Shared cores (r_{k-1}, v_k, d_k, r_k); a token's row picks slice i_k of every core,
    where i_k are the mixed-radix digits of the token id (Div and Mod)."""

    def __init__(self, ttm: TTMatrix, int8: bool = False) -> None:
        self.ttm = ttm
        self.int8 = int8
        self.vocab_size, self.dim = ttm.vocab_size, ttm.dim
        self._cores: list[str] | None = None

    def _core_names(self, b: GraphBuilder) -> list[str]:
        if self._cores is None:
            self._cores = [
                _store_core(b, f"core_{k}", c, self.int8, (0, 2, 3))
                for k, c in enumerate(self.ttm.cores)
            ]
        return self._cores

    def rows(self, b: GraphBuilder, ids: str) -> str:
        vf = list(self.ttm.vocab_factors)
        gathered = []
        for k, core in enumerate(self._core_names(b)):
            stride = int(np.prod(vf[k + 1 :], dtype=np.int64))
            digit = b.op("Div", [ids, b.ints(f"stride_{k}", [stride])]) if stride > 1 else ids
            digit = b.op("Mod", [digit, b.ints(f"radix_{k}", [vf[k]])]) if k > 0 else digit
            g = b.op("Gather", [core, digit], axis=1)  # (r_{k-1}, batch, seq, d_k, r_k)
            gathered.append(b.op("Transpose", [g], perm=[1, 2, 0, 3, 4]))
        ranks = [c.shape[0] for c in self.ttm.cores] + [1]
        return _contract(b, gathered, ranks, list(self.ttm.dim_factors), self.dim)

    def dense(self) -> np.ndarray:
        cores = self.ttm.cores
        if self.int8:
            cores = [dequantize_int8(*quantize_int8(c, (0, 2, 3))) for c in cores]
        ttm = dataclasses.replace(self.ttm, cores=cores)
        return ttm.rows(np.arange(self.vocab_size)).astype(np.float32)
