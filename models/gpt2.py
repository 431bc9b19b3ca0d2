"""GPT-2 (gpt2, gpt2-medium, distilgpt2, ...): learned absolute positions, tied head."""

from __future__ import annotations

from tensorgpt.models.base import DecoderShape, ModelAdapter, register


@register
class GPT2Adapter(ModelAdapter):
    hf_classes = ("GPT2LMHeadModel",)
    # wpe lives inside the body and is indexed by position_ids, so left padding works.
    position_encoding = "learned absolute (transformer.wpe, indexed by position_ids)"

    def decoder_body(self):
        return self.model.transformer

    def shape(self) -> DecoderShape:
        c = self.config
        return DecoderShape(
            vocab_size=c.vocab_size,
            hidden_size=c.n_embd,
            num_layers=c.n_layer,
            num_kv_heads=c.n_head,
            head_dim=c.n_embd // c.n_head,
            max_position_embeddings=c.n_positions,
        )
