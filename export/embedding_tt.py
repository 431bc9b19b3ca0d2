"""The tensor-train token tables as ONNX subgraphs (export/embedding_graph.py's contract).

- PerTokenTTEmbedding: every token's row a Matrix Product State (TensorGPT), its cores
  gathered per token and contracted by MatMuls;
- TTMatrixEmbedding: the (V, D) table as one TT-matrix, rows by per-factor Gathers.

Cores are float32, or int8 codes with fp16 scales decoded at load by Cast and Mul.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

from tensorgpt.export.embedding_graph import EmbeddingGraph
from tensorgpt.export.graph_builder import GraphBuilder
from tensorgpt.tt_ops.row_codecs import dequantize_int8, quantize_int8

if TYPE_CHECKING:
    from tensorgpt.tt_ops.per_token import PerTokenTT
    from tensorgpt.tt_ops.tt_matrix import TTMatrix


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


def _contract(
    b: GraphBuilder, cores: list[tuple[str, bool]], ranks: list[int], modes: list[int], dim: int
) -> str:
    """Contract cores into rows (batch, seq, D), from both ends towards the middle.

    cores[k] = (name, per_token): a per-token core was gathered to (batch, seq, r_{k-1}, n_k,
    r_k); a shared core is (r_{k-1}, n_k, r_k) and broadcasts over (batch, seq) in MatMul.
    Left half:  L = G_1 .. G_m as (n_1 .. n_m, r_m).
    Right half: R = G_{m+1} .. G_d as (r_m, n_{m+1} .. n_d).
    Row = L @ R flattened, so the first mode is the most significant digit of the output
    index (C order), as in tt_ops. Meeting in the middle keeps every intermediate at most
    (sqrt(D), r) per token instead of (D/2, r): when onnxruntime folds the whole table for
    the tied head at load, that is the difference between ~0.6 GB and ~2.8 GB of transient
    memory for GPT-2's 50257 x 768 at rank 4.
    """
    if not any(per_token for _, per_token in cores):
        raise ValueError("at least one TT core must depend on the token")
    lead = lambda batched: [0, 0] if batched else []  # noqa: E731  (Reshape 0 = keep that dim)
    d = len(cores)
    m = max(1, d // 2)

    name, left_batched = cores[0]
    x = b.op(
        "Reshape", [name, b.ints(f"l0_{left_batched}", [*lead(left_batched), modes[0], ranks[1]])]
    )
    left = modes[0]
    for k in range(1, m):
        name, per_token = cores[k]
        core = b.op(
            "Reshape",
            [
                name,
                b.ints(f"l{k}_{per_token}", [*lead(per_token), ranks[k], modes[k] * ranks[k + 1]]),
            ],
        )
        left_batched = left_batched or per_token
        left *= modes[k]
        x = b.op("MatMul", [x, core])
        x = b.op(
            "Reshape",
            [x, b.ints(f"l{k}_out_{left_batched}", [*lead(left_batched), left, ranks[k + 1]])],
        )

    right = 1
    if m < d:
        name, right_batched = cores[d - 1]
        y = b.op(
            "Reshape",
            [
                name,
                b.ints(
                    f"r{d - 1}_{right_batched}", [*lead(right_batched), ranks[d - 1], modes[d - 1]]
                ),
            ],
        )
        right = modes[d - 1]
        for k in range(d - 2, m - 1, -1):
            name, per_token = cores[k]
            core = b.op(
                "Reshape",
                [
                    name,
                    b.ints(
                        f"r{k}_{per_token}", [*lead(per_token), ranks[k] * modes[k], ranks[k + 1]]
                    ),
                ],
            )
            right_batched = right_batched or per_token
            right *= modes[k]
            y = b.op("MatMul", [core, y])
            y = b.op(
                "Reshape",
                [y, b.ints(f"r{k}_out_{right_batched}", [*lead(right_batched), ranks[k], right])],
            )
        x = b.op("MatMul", [x, y])  # (.., left, right)
    size = left * right
    x = b.op("Reshape", [x, b.ints("shape_rows", [0, 0, size])])
    if size > dim:  # zero padding to the next power of two: keep the first D entries
        x = b.op(
            "Slice",
            [x, b.ints("slice_start", [0]), b.ints("slice_end", [dim]), b.ints("slice_axis", [2])],
        )
    return x


class PerTokenTTEmbedding(EmbeddingGraph):
    """TensorGPT: every row is its own MPS; core k stored as (V, r_{k-1}, n_k, r_k).

    A core that is the same for every token (TT-SVD leaves the untruncated outer bonds as
    identity-like cores: 4 of 10 cores at D=768, rank 4) is stored once as (r_{k-1}, n_k, r_k)
    and not gathered.
    """

    def __init__(self, tt: PerTokenTT, int8: bool = False) -> None:
        self.tt = tt
        self.int8 = int8
        self.vocab_size, self.dim = tt.vocab_size, tt.dim
        self.shared = [bool(np.all(c == c[:1])) for c in tt.cores]
        if all(self.shared):  # every row identical: keep one core per token to stay general
            self.shared[-1] = False
        self._cores: list[tuple[str, bool]] | None = None

    def _stored(self) -> list[tuple[np.ndarray, tuple]]:
        """Each core as stored, with the axes its int8 scale reduces over."""
        return [
            (c[0], (0, 1, 2)) if shared else (c, (1, 2, 3))
            for c, shared in zip(self.tt.cores, self.shared)
        ]

    def _core_names(self, b: GraphBuilder) -> list[tuple[str, bool]]:
        if self._cores is None:
            self._cores = [
                (
                    _store_core(b, f"core_{k}" + ("_shared" if shared else ""), c, self.int8, axes),
                    not shared,
                )
                for k, ((c, axes), shared) in enumerate(zip(self._stored(), self.shared))
            ]
        return self._cores

    def rows(self, b: GraphBuilder, ids: str) -> str:
        cores = [
            (b.op("Gather", [name, ids], axis=0) if per_token else name, per_token)
            for name, per_token in self._core_names(b)
        ]
        return _contract(b, cores, list(self.tt.ranks), list(self.tt.mode_sizes), self.dim)

    def dense(self) -> np.ndarray:
        if not self.int8:
            return self.tt.reconstruct().astype(np.float32)
        cores = []
        for (stored, axes), shared in zip(self._stored(), self.shared):
            decoded = dequantize_int8(*quantize_int8(stored, axes))
            cores.append(
                np.broadcast_to(decoded, (self.vocab_size, *decoded.shape)) if shared else decoded
            )
        return dataclasses.replace(self.tt, cores=cores).reconstruct().astype(np.float32)


class TTMatrixEmbedding(EmbeddingGraph):
    """Shared cores (r_{k-1}, v_k, d_k, r_k); a token's row picks slice i_k of every core,
    where i_k are the mixed-radix digits of the token id (Div and Mod)."""

    def __init__(self, ttm: TTMatrix, int8: bool = False) -> None:
        self.ttm = ttm
        self.int8 = int8
        self.vocab_size, self.dim = ttm.vocab_size, ttm.dim
        self._cores: list[str] | None = None
        self._whole: str | None = None  # table(b), built once for table_rows

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
            gathered.append((b.op("Transpose", [g], perm=[1, 2, 0, 3, 4]), True))
        ranks = [c.shape[0] for c in self.ttm.cores] + [1]
        return _contract(b, gathered, ranks, list(self.ttm.dim_factors), self.dim)

    def table(self, b: GraphBuilder) -> str:
        """The whole table straight from the shared cores, never gathering per token.

        X_1 = G_1 as (v_1 d_1, r_1); X_k = X_{k-1} @ G_k as (r_{k-1}, v_k d_k r_k), reshaped to
        (v_1 d_1 .. v_k d_k, r_k); then (v_1, d_1, .., v_d, d_d) is transposed to
        (v_1 .. v_d, d_1 .. d_d) and the padding rows past V are sliced off. Gathering every
        id instead would materialise (r, V, d_k, r) blocks: 6 GB for SmolLM2 at rank 64.
        """
        names = self._core_names(b)
        vf, df = list(self.ttm.vocab_factors), list(self.ttm.dim_factors)
        ranks = [c.shape[0] for c in self.ttm.cores] + [1]
        x = b.op("Reshape", [names[0], b.ints("table_0", [vf[0] * df[0], ranks[1]])])
        size = vf[0] * df[0]
        for k in range(1, len(names)):
            core = b.op(
                "Reshape",
                [names[k], b.ints(f"table_{k}", [ranks[k], vf[k] * df[k] * ranks[k + 1]])],
            )
            size *= vf[k] * df[k]
            x = b.op(
                "Reshape",
                [b.op("MatMul", [x, core]), b.ints(f"table_{k}_out", [size, ranks[k + 1]])],
            )
        interleaved = [n for pair in zip(vf, df) for n in pair]
        x = b.op("Reshape", [x, b.ints("table_digits", interleaved)])
        order = list(range(0, 2 * len(vf), 2)) + list(range(1, 2 * len(vf), 2))
        x = b.op("Transpose", [x], perm=order)
        x = b.op("Reshape", [x, b.ints("table_padded", [int(np.prod(vf)), self.dim])])
        if int(np.prod(vf)) > self.vocab_size:
            x = b.op(
                "Slice",
                [
                    x,
                    b.ints("vocab_start", [0]),
                    b.ints("vocab_end", [self.vocab_size]),
                    b.ints("vocab_axis", [0]),
                ],
            )
        return x

    def table_rows(self, b: GraphBuilder, start: int, stop: int, after: str = "") -> str:
        """A slice of `table(b)`: gathering per token would materialise (r, n, d_k, r)
        blocks (see `table`), so a TT-matrix table still passes through (V, D) at load."""
        if self._whole is None:
            self._whole = self.table(b)
        return b.op(
            "Slice",
            [
                self._whole,
                b.ints(f"start{start}", [start]),
                b.ints(f"stop{stop}", [stop]),
                b.ints("vocab_axis", [0]),
            ],
        )

    def dense(self) -> np.ndarray:
        cores = self.ttm.cores
        if self.int8:
            cores = [dequantize_int8(*quantize_int8(c, (0, 2, 3))) for c in cores]
        ttm = dataclasses.replace(self.ttm, cores=cores)
        return ttm.rows(np.arange(self.vocab_size)).astype(np.float32)
