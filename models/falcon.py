"""Falcon: the key/value head count is not `num_key_value_heads` but follows from the layout
flags (Falcon-7B: multi-query, one KV head; the new decoder layout: `num_kv_heads`)."""

from __future__ import annotations

import dataclasses

from tensorgpt.models.base import DecoderShape, register
from tensorgpt.models.generic import GenericAdapter


@register
class FalconAdapter(GenericAdapter):
    hf_classes = ("FalconForCausalLM",)

    def shape(self) -> DecoderShape:
        c = self.config
        if c.new_decoder_architecture:
            kv = c.num_kv_heads
        else:
            kv = 1 if c.multi_query else c.num_attention_heads
        return dataclasses.replace(super().shape(), num_kv_heads=kv)
