"""Tiny checkpoints built locally (no downloads), shared by every test folder.

A byte-level BPE tokenizer is trained on a slice of wikitext-2 *valid* text, so any string
tokenizes; random GPT-2 and Llama models of matching vocabulary are saved as ordinary HF
checkpoint folders, which is exactly what a user would point `tensorgpt export` at.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "wikitext-2"
TINY_VOCAB = 384
# At HF's default init (std 0.02) a tiny random model's greedy decoding repeats one token
# forever, which would let a broken KV cache pass a token-for-token test. std 0.16 gives
# varied, context-dependent output.
SHARP_INIT = 0.16


def pytest_addoption(parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config, items) -> None:
    """`slow` tests (declared in pyproject.toml) are deselected unless --run-slow is given."""
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def _training_text() -> list[str]:
    valid = SHARED_DATA / "valid.txt"
    if valid.is_file():
        return valid.read_text(encoding="utf-8").splitlines()[:2000]
    return ["The quick brown fox jumps over the lazy dog."] * 50  # shared/ missing: still runs


def build_tokenizer(folder: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_training_text(), trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>"
    )
    fast.save_pretrained(str(folder))
    return fast


# Tiny configs per family: 2 layers, hidden 64, 4 heads over 2 KV heads, vocab 384. Sliding
# windows are 8 tokens, shorter than the 16-token prompt of the export's parity check, so the
# parity check and the KV-cache tests run past the window. Per family only what differs.
SLIDING_WINDOW = 8
_LLAMA_LIKE = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    tie_word_embeddings=True,
)
FAMILIES: dict[str, tuple[str, str, dict]] = {
    # family: (config class, model class, config kwargs beyond _LLAMA_LIKE)
    "llama": ("LlamaConfig", "LlamaForCausalLM", {}),
    "mistral": (
        "MistralConfig",
        "MistralForCausalLM",
        {"sliding_window": SLIDING_WINDOW, "tie_word_embeddings": False},
    ),
    "qwen2": (
        "Qwen2Config",
        "Qwen2ForCausalLM",
        # layers >= max_window_layers slide: layer 0 full, layer 1 sliding
        {"use_sliding_window": True, "sliding_window": SLIDING_WINDOW, "max_window_layers": 1},
    ),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {"head_dim": 16}),
    "gemma": ("GemmaConfig", "GemmaForCausalLM", {"head_dim": 16}),
    "gemma2": (
        "Gemma2Config",
        "Gemma2ForCausalLM",
        {
            "head_dim": 16,
            "sliding_window": SLIDING_WINDOW,
            "final_logit_softcapping": 5.0,  # small, so the cap bends tiny-model logits
            "attn_logit_softcapping": 5.0,
        },
    ),
    "gemma3": (
        "Gemma3TextConfig",
        "Gemma3ForCausalLM",
        {
            "head_dim": 16,
            "sliding_window": SLIDING_WINDOW,
            "layer_types": ["sliding_attention", "full_attention"],
        },
    ),
    "phi3": (
        "Phi3Config",
        "Phi3ForCausalLM",
        {"partial_rotary_factor": 0.5, "tie_word_embeddings": False, "pad_token_id": 0},
    ),
    "smollm3": (
        "SmolLM3Config",
        "SmolLM3ForCausalLM",
        {"no_rope_layers": [1, 0], "pad_token_id": 0},
    ),
    "olmo2": ("Olmo2Config", "Olmo2ForCausalLM", {"pad_token_id": 0}),
    "granite": (
        "GraniteConfig",
        "GraniteForCausalLM",
        {
            "logits_scaling": 4.0,
            "embedding_multiplier": 3.0,
            "residual_multiplier": 0.5,
            "attention_multiplier": 0.2,
        },
    ),
    "cohere": ("CohereConfig", "CohereForCausalLM", {"logit_scale": 0.5, "pad_token_id": 0}),
    "stablelm": ("StableLmConfig", "StableLmForCausalLM", {"partial_rotary_factor": 0.25}),
    "starcoder2": ("Starcoder2Config", "Starcoder2ForCausalLM", {"sliding_window": None}),
    # Nemotron (Minitron, Nemotron-Mini): LayerNorm with 1 + w, squared-ReLU MLP without a
    # gate, partial rotary (0.5 by default), untied head
    "nemotron": (
        "NemotronConfig",
        "NemotronForCausalLM",
        {"pad_token_id": 0, "tie_word_embeddings": False},
    ),
    # Bloom (ALiBi positions, fused per-head qkv, an embedding LayerNorm) and Falcon-7B's
    # layout (multi-query: one KV head, parallel attention + MLP); neither config has
    # num_key_value_heads
    "bloom": ("BloomConfig", "BloomForCausalLM", {"num_key_value_heads": None}),
    "falcon": ("FalconConfig", "FalconForCausalLM", {"num_key_value_heads": None}),
    "phi": (
        "PhiConfig",
        "PhiForCausalLM",
        {"partial_rotary_factor": 0.5, "tie_word_embeddings": False},
    ),
    "gpt2": (
        "GPT2Config",
        "GPT2LMHeadModel",
        {"n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 256},
    ),
}


def build_checkpoint(folder: Path, family: str, seed: int = 0, **overrides) -> Path:
    """A random `family` checkpoint with the tiny tokenizer, saved as an HF folder.

    overrides: config kwargs (e.g. real-size shapes for benchmarks)."""
    import torch
    import transformers

    config_name, model_name, extra = FAMILIES[family]
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(folder)
    base = {} if family == "gpt2" else dict(_LLAMA_LIKE)
    kwargs = {**base, **extra, **overrides}
    config = getattr(transformers, config_name)(
        initializer_range=kwargs.pop("initializer_range", SHARP_INIT),
        vocab_size=kwargs.pop("vocab_size", len(tokenizer)),
        bos_token_id=0,
        eos_token_id=0,
        **kwargs,
    )
    torch.manual_seed(seed)
    model = getattr(transformers, model_name)(config)
    with torch.no_grad():  # random init leaves norms at exactly 1 and biases at 0: perturb them
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(str(folder))
    return folder


def family_checkpoint(tmp_path_factory, family: str) -> Path:
    return build_checkpoint(tmp_path_factory.mktemp(f"tiny-{family}"), family)


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory) -> Path:
    return family_checkpoint(tmp_path_factory, "gpt2")


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    return family_checkpoint(tmp_path_factory, "llama")


@pytest.fixture(scope="session", autouse=True)
def _private_cache_home(tmp_path_factory):
    """Calibration statistics and heal checkpoints (~/.cache/tensorgpt) go to a folder of this
    test session, not the user's cache."""
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache-home"))
    yield
    if old is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = old
