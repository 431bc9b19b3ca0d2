"""The export's `tokenizer.json`, loaded with the `tokenizers` library (no transformers).

`StreamDecoder` turns token ids into text one token at a time. Decoding each token on its own
is wrong for byte-level BPE (a UTF-8 character split over two tokens) and for SentencePiece
(a leading space is dropped when a token is decoded alone), so it decodes a short window and
emits only the text that became final (the offsets scheme of HF text-generation-inference).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tokenizers import Tokenizer

from tensorgpt.common.contract import TOKENIZER_FILE

_INCOMPLETE = "\ufffd"  # what a partial UTF-8 sequence decodes to


def load_tokenizer(folder: str | Path) -> Tokenizer:
    path = Path(folder) / TOKENIZER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{Path(folder)} has no {TOKENIZER_FILE}")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception on a malformed file
        raise ValueError(f"cannot read {path}: {exc}") from None


def encode(tokenizer: Tokenizer, text: str, add_special_tokens: bool = True) -> list[int]:
    """Token ids of `text`.

    With `add_special_tokens` the tokenizer's own post-processor decides (a Llama tokenizer
    adds BOS, GPT-2's adds nothing), the same as calling the HF tokenizer on the prompt.
    """
    return tokenizer.encode(text, add_special_tokens=add_special_tokens).ids


def decode(tokenizer: Tokenizer, ids: Sequence[int]) -> str:
    return tokenizer.decode(list(ids), skip_special_tokens=True)


class StreamDecoder:
    """Feed generated ids one by one with `push`; it returns the newly final text."""

    def __init__(self, tokenizer: Tokenizer, prompt_ids: Sequence[int] = ()) -> None:
        self._tokenizer = tokenizer
        # A few prompt tokens give the first generated token its left context (spacing).
        self._ids: list[int] = list(prompt_ids[-4:])
        self._prefix = 0
        self._read = len(self._ids)

    def push(self, token_id: int) -> str:
        self._ids.append(int(token_id))
        prefix_text = decode(self._tokenizer, self._ids[self._prefix : self._read])
        new_text = decode(self._tokenizer, self._ids[self._prefix :])
        if len(new_text) > len(prefix_text) and not new_text.endswith(_INCOMPLETE):
            self._prefix, self._read = self._read, len(self._ids)
            return new_text[len(prefix_text) :]
        return ""  # incomplete character: wait for the next token

    def flush(self) -> str:
        """Whatever is still held back at the end of generation."""
        prefix_text = decode(self._tokenizer, self._ids[self._prefix : self._read])
        new_text = decode(self._tokenizer, self._ids[self._prefix :])
        self._prefix = self._read = len(self._ids)
        return new_text[len(prefix_text) :]
