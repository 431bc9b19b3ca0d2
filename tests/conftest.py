"""Tiny checkpoints built locally (no downloads), shared by every test folder.

A byte-level BPE tokenizer is trained on a slice of wikitext-2 *valid* text, so any string
tokenizes; random GPT-2 and Llama models of matching vocabulary are saved as ordinary HF
checkpoint folders, which is exactly what a user would point `tensorgpt export` at.
"""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "wikitext-2"
TINY_VOCAB = 384
# At HF's default init (std 0.02) a tiny random model's greedy decoding repeats one token
# forever, which would let a broken KV cache pass a token-for-token test. std 0.16 gives
# varied, context-dependent output.
SHARP_INIT = 0.16


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


def build_checkpoint(folder: Path, family: str, seed: int = 0, positions: int = 256) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(folder)
    vocab = len(tokenizer)
    torch.manual_seed(seed)
    if family == "gpt2":
        config = GPT2Config(
            initializer_range=SHARP_INIT,
            vocab_size=vocab,
            n_embd=64,
            n_layer=2,
            n_head=4,
            n_positions=positions,
            bos_token_id=0,
            eos_token_id=0,
        )
        model = GPT2LMHeadModel(config)
    elif family == "llama":
        config = LlamaConfig(
            initializer_range=SHARP_INIT,
            vocab_size=vocab,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=positions,
            tie_word_embeddings=True,
            bos_token_id=0,
            eos_token_id=0,
        )
        model = LlamaForCausalLM(config)
    else:
        raise ValueError(family)
    with torch.no_grad():  # random init leaves norms at exactly 1 and biases at 0: perturb them
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory) -> Path:
    return build_checkpoint(tmp_path_factory.mktemp("tiny-gpt2"), "gpt2")


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    return build_checkpoint(tmp_path_factory.mktemp("tiny-llama"), "llama")
