"""Falcon: the config names its KV heads `num_kv_heads` (no alias to num_key_value_heads), and
the older layout has one shared KV head (multi_query) or one per head."""

from __future__ import annotations

from dataclasses import replace

from tensorgpt.models.base import DecoderShape, register
from tensorgpt.models.generic import GenericAdapter


@register
class FalconAdapter(GenericAdapter):
    hf_classes = ("FalconForCausalLM",)

    def shape(self) -> DecoderShape:
        c = self.config
        if c.new_decoder_architecture:
            kv_heads = c.num_kv_heads
        else:
            kv_heads = 1 if c.multi_query else c.num_attention_heads
        return replace(super().shape(), num_kv_heads=kv_heads)
