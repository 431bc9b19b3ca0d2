"""Streaming detokenization: the pieces printed one token at a time add up to the full text."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from tensorgpt.runtime_demo.tokenizer import StreamDecoder, decode, encode

CORPUS = ["The café served crème brûlée. 東京は大きい 🙂🚀 naïve coöperation"] * 5


@pytest.fixture(scope="module")
def byte_level() -> Tokenizer:
    """GPT-2 style: byte-level BPE, so one character can span several tokens."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    return tokenizer


@pytest.fixture(scope="module")
def metaspace() -> Tokenizer:
    """SentencePiece style: a token's leading space is lost when it is decoded alone."""
    tokenizer = Tokenizer(models.BPE(byte_fallback=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=200)
    tokenizer.train_from_iterator(CORPUS, trainer)
    return tokenizer


def _streamed(tokenizer: Tokenizer, prompt: list[int], ids: list[int]) -> str:
    stream = StreamDecoder(tokenizer, prompt)
    return "".join(stream.push(i) for i in ids) + stream.flush()


@settings(max_examples=40, deadline=None)
@given(st.text(alphabet="aé東🙂 .cr", min_size=1, max_size=30))
def test_byte_level_stream_matches_decode(byte_level: Tokenizer, text: str) -> None:
    ids = encode(byte_level, "The " + text)
    prompt, new = ids[:1], ids[1:]
    full, head = decode(byte_level, ids), decode(byte_level, prompt)
    assert _streamed(byte_level, prompt, new) == full[len(head) :]


def test_multibyte_character_waits_for_its_last_byte(byte_level: Tokenizer) -> None:
    ids = encode(byte_level, "🚀")
    assert len(ids) > 1  # the emoji's bytes are split over several tokens
    stream = StreamDecoder(byte_level)
    pieces = [stream.push(i) for i in ids]
    assert pieces[:-1] == [""] * (len(ids) - 1) and pieces[-1] == "🚀"


def test_metaspace_keeps_spaces(metaspace: Tokenizer) -> None:
    ids = encode(metaspace, "The café served crème brûlée")
    full, head = decode(metaspace, ids), decode(metaspace, ids[:2])
    assert _streamed(metaspace, ids[:2], ids[2:]) == full[len(head) :]
    assert " " in full[len(head) :]
