"""--method tt: TensorGPT's per-token Tensor-Train, one MPS per row (tt_ops/per_token.py)."""

from __future__ import annotations

from tensorgpt.export.methods import register
from tensorgpt.export.methods.base import FACTORS, RANK, REL_ERROR, EmbeddingMethod

DEFAULT_RANK = 4  # the paper's setting


@register
class PerTokenTT(EmbeddingMethod):
    name = "tt"
    help = "per-token Tensor-Train (TensorGPT)"
    order = 10
    options = (RANK, FACTORS, REL_ERROR)
    int8_cores = True

    def compress(self, table, spec, adapter=None, tokenizer=None):
        from tensorgpt.export.embedding_tt import PerTokenTTEmbedding
        from tensorgpt.tt_ops.per_token import decompose_per_token

        rank = spec.rank if spec.rank is not None else (None if spec.rel_error else DEFAULT_RANK)
        tt = decompose_per_token(
            table, rank=rank, mode_sizes=spec.factors, rel_error=spec.rel_error
        )
        graph = PerTokenTTEmbedding(tt, int8=spec.int8_cores)
        info = {"ranks": [int(r) for r in tt.ranks], "mode_sizes": [int(n) for n in tt.mode_sizes]}
        return graph, info
