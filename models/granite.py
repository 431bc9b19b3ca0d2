"""Granite: logits divided by `logits_scaling` after the head (its embedding_multiplier and
residual/attention multipliers act inside the body and need nothing)."""

from __future__ import annotations

from tensorgpt.models.base import HeadQuirks, register
from tensorgpt.models.generic import GenericAdapter


@register
class GraniteAdapter(GenericAdapter):
    hf_classes = ("GraniteForCausalLM",)

    def head_quirks(self) -> HeadQuirks:
        return HeadQuirks(divide=self.config.logits_scaling)
