"""Llama family (SmolLM2, TinyLlama, Llama 2/3): rotary positions, grouped KV heads."""

from __future__ import annotations

from tensorgpt.models.base import DecoderShape, ModelAdapter, register


@register
class LlamaAdapter(ModelAdapter):
    hf_classes = ("LlamaForCausalLM",)
    position_encoding = "rotary (computed from position_ids in every attention layer)"

    def decoder_body(self):
        return self.model.model

    def shape(self) -> DecoderShape:
        c = self.config
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        return DecoderShape(
            vocab_size=c.vocab_size,
            hidden_size=c.hidden_size,
            num_layers=c.num_hidden_layers,
            num_kv_heads=c.num_key_value_heads,
            head_dim=head_dim,
            max_position_embeddings=c.max_position_embeddings,
        )
