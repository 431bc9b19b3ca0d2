"""--method none: the dense fp32 table, one Gather (the reference every ratio is measured against)."""

from __future__ import annotations

from tensorgpt.export.methods import register
from tensorgpt.export.methods.base import EmbeddingMethod


@register
class Dense(EmbeddingMethod):
    name = "none"
    help = "the dense table (default)"
    order = 0
    measures_reconstruction = False

    def compress(self, table, spec, adapter=None, tokenizer=None):
        from tensorgpt.export.embedding_graph import DenseEmbedding

        return DenseEmbedding(table), {}
