"""--method svd: truncated SVD of the table, the low-rank baseline."""

from __future__ import annotations

from tensorgpt.export.methods import register
from tensorgpt.export.methods.base import RANK, EmbeddingMethod

DEFAULT_RANK = 64


@register
class TruncatedSVD(EmbeddingMethod):
    name = "svd"
    help = "truncated SVD (baseline)"
    order = 30
    options = (RANK,)

    def compress(self, table, spec, adapter=None, tokenizer=None):
        from tensorgpt.export.embedding_graph import LowRankEmbedding

        rank = spec.rank or DEFAULT_RANK
        return LowRankEmbedding(table, rank), {"ranks": [rank]}
