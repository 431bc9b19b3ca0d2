"""Streaming eval: the text read, tokenized and scored in pieces gives the same ids and the
same perplexity as all at once, stops reading at --max-tokens, and reports progress."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from tensorgpt.cli import main
from tensorgpt.runtime_demo.perplexity import perplexity, perplexity_stream
from tensorgpt.runtime_demo.session import ExportedModel
from tensorgpt.runtime_demo.text_stream import encode_stream, read_pieces
from tests.conftest import _training_text


def _text() -> str:
    # wikitext-like lines with line breaks in every arrangement the cut rule must handle:
    # headings, blank lines, indented lines, CRLF, non-ASCII characters (split across read
    # blocks), and one long line with no break at all
    lines = []
    for i in range(400):
        if i % 50 == 0:
            lines.append(f" = Section {i} = \n\n")
        lines.append(f" The value {i} is {i * 7} , café über 日本語 — and “quoted” words .\n")
        if i % 7 == 0:
            lines.append("\n  indented line\r\n\n")
    return "".join(_training_text()[:100]) + "".join(lines) + "word " * 3000 + "\n"


def _byte_level() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(_training_text()[:500], trainer)
    return tok


def _sentencepiece_like() -> Tokenizer:
    """Metaspace with a prefix "▁" at the start of the input, as Llama-2-style tokenizers do:
    encoding each piece alone would add a "▁" at every piece's start."""
    tok = Tokenizer(models.BPE(byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]  # what byte_fallback falls back to
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=byte_tokens, show_progress=False)
    tok.train_from_iterator(_training_text()[:500], trainer)
    return tok


@pytest.mark.parametrize("make", [_byte_level, _sentencepiece_like])
@pytest.mark.parametrize("long_line", [1 << 22, 500])
def test_streamed_ids_equal_one_encode(make, long_line: int, tmp_path: Path, monkeypatch) -> None:
    """Also with a long line cut inside (a 500-character limit instead of 4 MB)."""
    monkeypatch.setattr("tensorgpt.runtime_demo.text_stream._LONG_LINE", long_line)
    tokenizer = make()
    text = _text()
    path = tmp_path / "t.txt"
    path.write_bytes(text.encode())
    whole = tokenizer.encode(text, add_special_tokens=False).ids
    pieces = list(read_pieces(path, block=1000))  # small blocks: many pieces, split characters
    assert len(pieces) > 20
    assert "".join(p for p, _ in pieces) == text
    streamed = np.concatenate([ids for ids, _ in encode_stream(tokenizer, iter(pieces))])
    assert streamed.tolist() == whole


def test_not_utf8_names_file_and_offset(tmp_path: Path, toy_dir: Path, capsys) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"the cat sat\n" * 1000 + "café\n".encode("latin-1"))
    with pytest.raises(
        ValueError, match=r"latin1.txt is not UTF-8 text \(invalid byte at offset 12003\)"
    ):
        list(read_pieces(path, block=1000))
    assert main(["eval", str(toy_dir), "--text", str(path)]) == 2
    err = capsys.readouterr().err
    assert "latin1.txt is not UTF-8" in err and len(err.strip().splitlines()) == 1
    assert main(["run", str(toy_dir), "--prompts", str(path)]) == 2
    assert "latin1.txt is not UTF-8" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("window", "stride", "max_tokens"), [(8, 8, None), (8, 3, None), (6, 5, 50)]
)
def test_stream_scores_like_the_whole_list(toy_dir: Path, window, stride, max_tokens) -> None:
    model = ExportedModel(toy_dir)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, model.vocab_size, 203)
    whole = perplexity(model, ids, window, stride, max_tokens)
    cuts = sorted(rng.choice(np.arange(1, 203), 12, replace=False))
    chunks = iter(np.split(ids, cuts))
    streamed = perplexity_stream(model, chunks, window, stride, max_tokens)
    assert streamed == pytest.approx(whole, rel=1e-12)


def test_reading_stops_at_max_tokens(toy_dir: Path) -> None:
    model = ExportedModel(toy_dir)
    endless = (np.array([2, 3, 4, 5], dtype=np.int64) for _ in itertools.count())
    result = perplexity_stream(model, endless, 8, 8, max_tokens=100)
    assert result["tokens"] == 100


def test_eval_progress_off_a_terminal(toy_dir: Path, tmp_path: Path, capsys) -> None:
    text = tmp_path / "t.txt"
    text.write_text("the cat sat on the mat\n" * 400)
    assert main(["eval", str(toy_dir), "--text", str(text), "--window", "16"]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("[perplexity]")]
    assert len(lines) == 10 and lines[-1].startswith("[perplexity] 100% of"), err
    assert main(["eval", str(toy_dir), "--text", str(text), "--no-progress"]) == 0
    assert "[perplexity]" not in capsys.readouterr().err
