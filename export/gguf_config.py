"""Config fields a GGUF file holds that transformers' GGUF reader drops: read them back.

transformers (5.x) builds the HF config from a GGUF through its GGUF_CONFIG_MAPPING, which for
a few architectures maps a key llama.cpp writes to nothing or to a name the config class no
longer reads; the model then fails to load (a size mismatch: Qwen3, GPT-2) or, worse, loads
as a different model (Gemma 2's caps, Phi-3's rotary share and window). Each entry below is one
such key, per GGUF architecture, and the config field it sets; export/load.py passes the values as config overrides. Checked against
transformers 5.24's integrations/ggml.py: tests/export/test_gguf_families.py loads a GGUF of
each family back to its checkpoint's own logits.
"""

from __future__ import annotations

from typing import Any

MISSED_KEYS: dict[str, dict[str, str]] = {
    # Qwen3's head_dim is not hidden / heads (Qwen3-0.6B: 1024 / 16 = 64, head_dim 128);
    # llama.cpp writes it as attention.key_length, transformers maps none and keeps 128.
    "qwen3": {"attention.key_length": "head_dim"},
    # transformers maps GPT-2's context_length to `n_ctx`; GPT2Config sizes wpe by n_positions.
    "gpt2": {"context_length": "n_positions"},
    # Gemma 2's caps: transformers keeps its defaults (50, 30), right only for the released sizes.
    "gemma2": {
        "attn_logit_softcapping": "attn_logit_softcapping",
        "final_logit_softcapping": "final_logit_softcapping",
    },
    # Phi-3 / Phi-4-mini: rotary over part of each head (Phi-4-mini: 0.75) and the sliding
    # window (Phi-3-mini-4k: 2047); transformers reads neither (full rotary, no window).
    "phi3": {
        "rope.dimension_count": "partial_rotary_factor",
        "attention.sliding_window": "sliding_window",
    },
    # Nemotron (Minitron, Nemotron-Mini) rotates part of each head (0.5 in the released
    # models, which is also the config's default); transformers maps rope.dimension_count to
    # nothing, so any other share would load as 0.5.
    "nemotron": {"rope.dimension_count": "partial_rotary_factor"},
}


def config_overrides(reader: Any) -> dict[str, Any]:
    """{config field: value} for the MISSED_KEYS present in an open gguf.GGUFReader."""

    def field(key: str) -> Any:
        found = reader.fields.get(key)
        return None if found is None else found.contents()

    arch = field("general.architecture")
    overrides = {}
    for key, attr in MISSED_KEYS.get(arch, {}).items():
        value = field(f"{arch}.{key}")
        if value is None:
            continue
        if attr == "partial_rotary_factor":  # GGUF counts rotary dims, HF their share of a head
            head_dim = field(f"{arch}.attention.key_length") or (
                field(f"{arch}.embedding_length") // field(f"{arch}.attention.head_count")
            )
            value = value / head_dim
        overrides[attr] = value
    return overrides


def apply_overrides(config: Any, overrides: dict[str, Any]) -> None:
    """Set `overrides` on a transformers config (a rotary share also where transformers 5
    reads it, in rope_parameters)."""
    for attr, value in overrides.items():
        setattr(config, attr, value)
        rope = getattr(config, "rope_parameters", None)
        if attr == "partial_rotary_factor" and isinstance(rope, dict):
            rope[attr] = value
