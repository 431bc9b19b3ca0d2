"""A text file as a stream of token ids, in bounded memory, with progress.

Tokenizing a 50 MB text in one `encode` call holds every token's string, offsets and ids at
once (about 9 GB for wikitext-sized files). Here the file is read in blocks of 64 KB and
cut at line breaks (inside a line longer than 4 MB: at a space), and each piece is encoded
with some text of its neighbours on both sides: 512 characters of the previous piece before
it, the start of the next after it. Only the tokens that start inside the piece are kept.
Tokenizers decide a token from nearby text only (a pre-tokenizer's word, a BPE merge), so
this gives the ids of one `encode` over the whole text, also for tokenizers that treat the
start or the end of their input specially (SentencePiece's leading "▁"); tests check it
against one `encode` for byte-level BPE and a SentencePiece-style BPE.
"""

from __future__ import annotations

import codecs
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

BLOCK_BYTES = 1 << 16  # 64 KB: tokenizers hold ~600 bytes per token while encoding a piece
_LONG_LINE = 4 << 20  # characters
_CONTEXT = 512  # characters of the previous piece encoded in front of the next


def _cut(text: str) -> int:
    """The last index where `text` may be split (0: nowhere): after a line break that is
    followed by more text; in a very long line, at a space between two non-spaces."""
    i = text.rfind("\n", 0, len(text) - 1)
    if i >= 0:
        return i + 1
    if len(text) > _LONG_LINE:
        i = text.rfind(" ", 0, len(text) - 1)
        while i > 0:
            if not text[i - 1].isspace() and not text[i + 1].isspace():
                return i
            i = text.rfind(" ", 0, i)
    return 0


def read_pieces(path: str | Path, block: int = BLOCK_BYTES) -> Iterator[tuple[str, int]]:
    """(piece of text, bytes of the file read so far), the pieces in order, joined = the file.

    ValueError naming the file when it is not UTF-8 (with the byte offset) or is empty."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    pending = ""
    offset = 0
    seen_text = False
    try:
        f = open(path, "rb")  # noqa: SIM115  (closed below, also when the consumer stops early)
    except OSError as exc:
        raise ValueError(f"cannot read --text {path}: {exc.strerror or exc}") from None
    with f:
        while True:
            raw = f.read(block)
            try:
                pending += decoder.decode(raw, final=not raw)
            except UnicodeDecodeError as exc:
                at = offset - len(decoder.getstate()[0]) + exc.start
                raise ValueError(
                    f"--text {path} is not UTF-8 text (invalid byte at offset {max(at, 0)})"
                ) from None
            offset += len(raw)
            seen_text = seen_text or not pending.isspace() and bool(pending)
            if not raw:
                break
            cut = _cut(pending)
            if cut:
                yield pending[:cut], offset
                pending = pending[cut:]
    if not seen_text:
        raise ValueError(f"--text {path} is empty")
    if pending:
        yield pending, offset


def encode_stream(
    tokenizer: Tokenizer, pieces: Iterator[tuple[str, int]]
) -> Iterator[tuple[np.ndarray, int]]:
    """(token ids of each piece, bytes read so far); no special tokens (perplexity's rule)."""
    left = ""
    held: tuple[str, int] | None = None
    for piece, done in pieces:
        if held is not None:
            yield _encode_between(tokenizer, left, held[0], piece[:_CONTEXT]), held[1]
            left = held[0][-_CONTEXT:]
        held = (piece, done)
    if held is not None:
        yield _encode_between(tokenizer, left, held[0], ""), held[1]


def _encode_between(tokenizer: Tokenizer, left: str, piece: str, right: str) -> np.ndarray:
    """Ids of the tokens starting inside `piece`, encoded between its neighbours' text."""
    encoding = tokenizer.encode(left + piece + right, add_special_tokens=False)
    lo, hi = len(left), len(left) + len(piece)
    return np.asarray(
        [t for t, (start, _end) in zip(encoding.ids, encoding.offsets) if lo <= start < hi],
        dtype=np.int64,
    )


class Progress:
    """Bytes of the text scored so far, on stderr: a tqdm bar on a terminal, else a line at
    every tenth (logs and CI see progress too, without a carriage-return bar)."""

    def __init__(self, total_bytes: int, enabled: bool, label: str = "perplexity") -> None:
        self.total = max(total_bytes, 1)
        self.enabled = enabled
        self.label = label
        self.started = time.perf_counter()
        self._bar = None
        self._next_tenth = 1
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(
                total=total_bytes, unit="B", unit_scale=True, desc=label, file=sys.stderr
            )
        self._done = 0

    def update(self, done_bytes: int, tokens: int) -> None:
        if not self.enabled:
            return
        done_bytes = max(done_bytes, self._done)
        if self._bar is not None:
            self._bar.update(done_bytes - self._done)
            self._bar.set_postfix(tokens=tokens, refresh=False)
        else:
            while done_bytes * 10 >= self._next_tenth * self.total and self._next_tenth <= 10:
                elapsed = time.perf_counter() - self.started
                print(
                    f"[{self.label}] {10 * self._next_tenth}% of {self.total / 1e6:.1f} MB, "
                    f"{tokens} tokens, {elapsed:.0f} s",
                    file=sys.stderr,
                    flush=True,
                )
                self._next_tenth += 1
        self._done = done_bytes

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def text_bytes(path: str | Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError as exc:
        raise ValueError(f"cannot read --text {path}: {exc.strerror or exc}") from None
