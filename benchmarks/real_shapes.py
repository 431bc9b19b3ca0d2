"""The real models' shapes the benchmarks write random-weight checkpoints at: one table.

Each entry: the family (tests/conftest.py FAMILIES), the config fields that give the real
model's shape, and the dtype its checkpoint is published in (written that way by
benchmarks/export_scaling.py; benchmarks/large_vocab.py builds in fp32).
"""

from __future__ import annotations

GPT2_VOCAB = 50257

SHAPES: dict[str, tuple[str, dict, str]] = {
    "gpt2": ("gpt2", dict(n_embd=768, n_layer=12, n_head=12, n_positions=1024), "float32"),
    "gpt2-xl": ("gpt2", dict(n_embd=1600, n_layer=48, n_head=25, n_positions=1024), "float32"),
    "gemma3-270m": (
        "gemma3",
        dict(
            vocab_size=262144,
            hidden_size=640,
            intermediate_size=2048,
            num_hidden_layers=18,
            num_attention_heads=4,
            num_key_value_heads=1,
            head_dim=256,
            sliding_window=512,
            layer_types=None,  # the config's own 5 sliding : 1 full pattern
            max_position_embeddings=32768,
        ),
        "bfloat16",
    ),
    "qwen2.5-0.5b": (
        "qwen2",
        dict(
            vocab_size=151936,
            hidden_size=896,
            intermediate_size=4864,
            num_hidden_layers=24,
            num_attention_heads=14,
            num_key_value_heads=2,
            use_sliding_window=False,
            sliding_window=None,
            max_position_embeddings=32768,
        ),
        "bfloat16",
    ),
    "qwen2.5-7b": (
        "qwen2",
        dict(
            vocab_size=152064,
            hidden_size=3584,
            intermediate_size=18944,
            num_hidden_layers=28,
            num_attention_heads=28,
            num_key_value_heads=4,
            max_position_embeddings=32768,
            use_sliding_window=False,
            sliding_window=None,
            max_window_layers=28,
            tie_word_embeddings=False,
        ),
        "bfloat16",
    ),
}
