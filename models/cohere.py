"""Cohere (Command R family): logits multiplied by `logit_scale` after the head."""

from __future__ import annotations

from tensorgpt.models.base import HeadQuirks, register
from tensorgpt.models.generic import GenericAdapter


@register
class CohereAdapter(GenericAdapter):
    hf_classes = ("CohereForCausalLM", "Cohere2ForCausalLM")

    def head_quirks(self) -> HeadQuirks:
        return HeadQuirks(multiply=self.config.logit_scale)
