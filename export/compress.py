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
# tc: transform coding (frequency classes, loss-sensitivity whitening, water-filled bits).
METHODS = ("none", "tt", "tt-matrix", "svd", "int8-rows", "int4-rows", "tc")
# The README's recommendation (14.5x smaller than fp32): the smallest budget of the sweep grid
# (export/sweep.py) whose perplexity stays within 1% of fp32 on SmolLM2-135M (docs/results.md).
TC_DEFAULT_BITS = 2.2
SVD_DEFAULT_RANK = 64


@dataclass(frozen=True)
class CompressionSpec:
    method: str = "none"
    rank: int | None = None  # rank cap; tt default 4 (the paper's setting)
    factors: tuple[int, ...] | None = None  # tt: mode sizes of a row; tt-matrix: factors of D
    vocab_factors: tuple[int, ...] | None = None  # tt-matrix only
    rel_error: float | None = None  # error-bounded truncation instead of a rank cap
    int8_cores: bool = False  # store TT cores as int8 + fp16 scales
    bits_per_weight: float | None = None  # tc: the byte budget, in bits per table entry
    calib_text: str | None = None  # tc: calibration text (never the evaluation text)
    heal_steps: int = 0  # tc: fit codebooks/scales/means/basis to the model's logits (0: off)

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
        if self.method == "tc":
            if self.rank or self.factors or self.rel_error:
                raise ValueError("--method tc takes --bits-per-weight and --calib-text")
            if not self.calib_text:
                raise ValueError(
                    "--method tc needs --calib-text FILE (text other than the evaluation text)"
                )
            if self.bits_per_weight is not None and not 0 < self.bits_per_weight <= 16:
                raise ValueError(
                    f"--bits-per-weight must be in (0, 16], got {self.bits_per_weight}"
                )
        elif self.bits_per_weight is not None or self.calib_text:
            raise ValueError("--bits-per-weight and --calib-text need --method tc")
        if self.heal_steps < 0:
            raise ValueError(f"--heal-steps must be >= 0, got {self.heal_steps}")
        if self.heal_steps and self.method != "tc":
            raise ValueError("--heal-steps needs --method tc")

    def options(self) -> dict:
        return {
            k: (list(v) if isinstance(v, tuple) else v)
            for k, v in asdict(self).items()
            if k != "method"
        }


def compress_embedding(
    table: np.ndarray, spec: CompressionSpec, model=None, tokenizer=None, log=None
) -> tuple[EmbeddingGraph, dict]:
    """The embedding graph for `spec` and a report (ranks, params, reconstruction metrics).

    model, tokenizer: needed by `tc` only, for its calibration statistics; log: where `tc`
    reports the progress of its calibration (default: stderr).
    """
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
    elif spec.method == "tc":
        graph, info = _transform_code(table, spec, model, tokenizer, log)
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

    info["reconstruction"] = {k: float(v) for k, v in table_metrics(table, graph.decoded()).items()}
    return graph, info


def _transform_code(
    table, spec: CompressionSpec, model, tokenizer, log=None
) -> tuple[EmbeddingGraph, dict]:
    from tensorgpt.export.calibration import compute_stats, read_text, sensitivity_metric
    from tensorgpt.export.embedding_transform_code import TransformCodedEmbedding
    from tensorgpt.progress import stage
    from tensorgpt.tt_ops.transform_code import fit_transform_code

    if model is None or tokenizer is None:
        raise ValueError("--method tc needs the model and tokenizer for calibration")
    text = read_text(spec.calib_text)
    stats = compute_stats(model, tokenizer, text, log=log)
    bits = spec.bits_per_weight or TC_DEFAULT_BITS
    with stage(f"fitting the transform code ({bits:g} bits per entry)", log):
        code = fit_transform_code(
            table,
            bits_per_weight=bits,
            token_counts=stats["counts"],
            sensitivity=sensitivity_metric(stats),
        )
    info = {
        "bits_per_weight": round(code.bits_per_weight(), 4),
        "classes": code.n_classes,
        "calibration_tokens": int(stats["n_tokens"]),
        "calibration_text": str(spec.calib_text),
        "unseen_tokens": int((stats["counts"] == 0).sum()),
    }
    if spec.heal_steps:
        from tensorgpt.export.healing import HealConfig, heal

        code, info["healing"] = heal(
            model, tokenizer, code, text, HealConfig(steps=spec.heal_steps)
        )
    return TransformCodedEmbedding(code), info
