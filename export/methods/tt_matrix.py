"""--method tt-matrix: one TT-matrix with shared cores for the whole table (tt_ops/tt_matrix.py)."""

from __future__ import annotations

from tensorgpt.common.command import int_list
from tensorgpt.export.methods import register
from tensorgpt.export.methods.base import FACTORS, RANK, REL_ERROR, EmbeddingMethod, Option

VOCAB_FACTORS = Option(
    "vocab_factors",
    "tt-matrix: factors of the (padded) vocabulary",
    type=int_list,
    check=lambda v: (
        None if v is None or all(f >= 1 for f in v) else f"must be positive integers, got {list(v)}"
    ),
)


@register
class TTMatrix(EmbeddingMethod):
    name = "tt-matrix"
    help = "shared-core TT-matrix of the whole table"
    order = 20
    options = (RANK, FACTORS, REL_ERROR, VOCAB_FACTORS)
    int8_cores = True

    def compress(self, table, spec, adapter=None, tokenizer=None):
        from tensorgpt.export.embedding_tt import TTMatrixEmbedding
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
        return graph, info
