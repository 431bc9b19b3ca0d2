"""Gemma 1/2/3 (text): rows scaled by sqrt(hidden_size) inside the embedding module, and
(Gemma 2, optionally 3) the final logits soft-capped.

The scale lives in Gemma*TextScaledWordEmbedding.forward, not in the weight, so an exported
embedding that only looks rows up must multiply them; the tied head uses the unscaled table.
"""

from __future__ import annotations

from tensorgpt.models.base import HeadQuirks, register
from tensorgpt.models.generic import GenericAdapter


@register
class GemmaAdapter(GenericAdapter):
    hf_classes = ("GemmaForCausalLM", "Gemma2ForCausalLM", "Gemma3ForCausalLM")

    def embedding_scale(self) -> float:
        # the buffer is fp32 sqrt(hidden); PyTorch multiplies by exactly this value
        return float(self.token_embedding().embed_scale)

    def head_quirks(self) -> HeadQuirks:
        return HeadQuirks(softcap=getattr(self.config, "final_logit_softcapping", None))
