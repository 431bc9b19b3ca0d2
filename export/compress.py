"""Turn `--method/--rank/--factors/--rel-error` into a compressed embedding graph.

This is the only place where export touches tt_ops: it picks the decomposition, measures the
reconstruction against the original table, and hands back an `EmbeddingGraph`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from tensorgpt.export.embedding_graph import (
    DenseEmbedding,
    EmbeddingGraph,
    LowRankEmbedding,
    PerTokenTTEmbedding,
    RowQuantizedEmbedding,
    TTMatrixEmbedding,
)

# tt, tt-matrix: the TT formats. svd, int8-rows, int4-rows: the baselines users would pick.
METHODS = ("none", "tt", "tt-matrix", "svd", "int8-rows", "int4-rows")
SVD_DEFAULT_RANK = 64


@dataclass(frozen=True)
class CompressionSpec:
    method: str = "none"
    rank: int | None = None  # rank cap; tt default 4 (the paper's setting)
    factors: tuple[int, ...] | None = None  # tt: mode sizes of a row; tt-matrix: factors of D
    vocab_factors: tuple[int, ...] | None = None  # tt-matrix only
    rel_error: float | None = None  # error-bounded truncation instead of a rank cap
    int8_cores: bool = False  # store TT cores as int8 + fp16 scales

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"--method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.rank is not None and self.rank < 1:
            raise ValueError(f"--rank must be >= 1, got {self.rank}")
        if self.rel_error is not None and not (0 < self.rel_error < 1):
            raise ValueError(f"--rel-error must be in (0, 1), got {self.rel_error}")
        if self.factors is not None and any(f < 1 for f in self.factors):
            raise ValueError(f"--factors must be positive integers, got {list(self.factors)}")
        if self.method in ("none", "int8-rows", "int4-rows") and (
            self.rank or self.factors or self.rel_error
        ):
            raise ValueError(
                f"--rank, --factors and --rel-error do not apply to --method {self.method}"
            )
        if self.method == "svd" and (self.factors or self.rel_error):
            raise ValueError("--method svd takes --rank only")

    def options(self) -> dict:
        return {
            k: (list(v) if isinstance(v, tuple) else v)
            for k, v in asdict(self).items()
            if k != "method"
        }


def compress_embedding(table: np.ndarray, spec: CompressionSpec) -> tuple[EmbeddingGraph, dict]:
    """The embedding graph for `spec` and a report (ranks, params, reconstruction metrics)."""
    spec.validate()
    table = np.asarray(table, dtype=np.float32)
    if spec.method == "none":
        return DenseEmbedding(table), {"reconstruction": None}
    if spec.method == "svd":
        rank = spec.rank or SVD_DEFAULT_RANK
        graph: EmbeddingGraph = LowRankEmbedding(table, rank)
        info: dict = {"ranks": [rank]}
    elif spec.method in ("int8-rows", "int4-rows"):
        graph = RowQuantizedEmbedding(table, bits=8 if spec.method == "int8-rows" else 4)
        info = {"bits": graph.bits}
    elif spec.method == "tt":
        from tensorgpt.tt_ops.per_token import decompose_per_token

        rank = spec.rank if spec.rank is not None else (None if spec.rel_error else 4)
        tt = decompose_per_token(
            table, rank=rank, mode_sizes=spec.factors, rel_error=spec.rel_error
        )
        graph = PerTokenTTEmbedding(tt, int8=spec.int8_cores)
        info = {"ranks": [int(r) for r in tt.ranks], "mode_sizes": [int(n) for n in tt.mode_sizes]}
    else:
        from tensorgpt.tt_ops.tt_matrix import decompose_tt_matrix

        kwargs = {
            "vocab_factors": spec.vocab_factors,
            "dim_factors": spec.factors,
            "rel_error": spec.rel_error,
        }
        if spec.rank is not None:
            kwargs["rank"] = spec.rank
        ttm = decompose_tt_matrix(table, **kwargs)
        graph = TTMatrixEmbedding(ttm, int8=spec.int8_cores)
        info = {
            "ranks": [int(c.shape[0]) for c in ttm.cores] + [1],
            "vocab_factors": [int(v) for v in ttm.vocab_factors],
            "dim_factors": [int(d) for d in ttm.dim_factors],
        }
    from tensorgpt.tt_ops.metrics import table_metrics

    info["reconstruction"] = {k: float(v) for k, v in table_metrics(table, graph.dense()).items()}
    return graph, info
