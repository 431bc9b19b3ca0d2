"""--method int8-rows / int4-rows: scalar quantization of the table, the baselines users reach
for first (tt_ops/row_codecs.py has the codecs)."""

from __future__ import annotations

from tensorgpt.export.methods import register
from tensorgpt.export.methods.base import EmbeddingMethod


class _RowQuantized(EmbeddingMethod):
    bits: int

    def compress(self, table, spec, adapter=None, tokenizer=None):
        from tensorgpt.export.embedding_graph import RowQuantizedEmbedding

        graph = RowQuantizedEmbedding(table, bits=self.bits)
        return graph, {"bits": graph.bits}


@register
class Int8Rows(_RowQuantized):
    name = "int8-rows"
    help = "int8 codes, one fp16 scale per row (baseline)"
    order = 40
    bits = 8


@register
class Int4Rows(_RowQuantized):
    name = "int4-rows"
    help = "4-bit codes, one fp16 scale per 32 columns (baseline)"
    order = 41
    bits = 4
