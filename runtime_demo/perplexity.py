"""Strided sliding-window perplexity, the convention of HF's "Perplexity of fixed-length models".

Convention (so numbers compare with transformers' guide and with each other):
- the text is tokenized without special tokens (no BOS) and cut to `max_tokens`;
- windows of `window` tokens start every `stride` tokens (stride <= window); each window runs
  from an empty cache with positions 0..len-1;
- a window scores only the tokens that no earlier window scored (the last `end - prev_end`),
  each predicted from everything before it inside the window; a window's first token has no
  context there and is never scored, so with stride == window the first token of every window
  is skipped, and the very first token of the text is never scored;
- perplexity = exp(total NLL / number of scored tokens), NLL computed in float64.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from .session import ExportedModel


def windows(n_tokens: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, first_scored) per window, for n_tokens tokens."""
    return list(_Windows(window, stride).ready(n_tokens, final=True))


class _Windows:
    """The windows of the module docstring, handed out as soon as their tokens are known:
    a window is final once `begin + window` tokens exist or the text has ended."""

    def __init__(self, window: int, stride: int) -> None:
        self.window, self.stride = window, stride
        self.begin = 0  # next window's first token
        self.prev_end = 0
        self.done = False

    def ready(self, available: int, final: bool) -> Iterator[tuple[int, int, int]]:
        while not self.done and self.begin < available:
            if not final and self.begin + self.window > available:
                return  # more tokens may still belong to this window
            end = min(self.begin + self.window, available)
            first_scored = max(self.prev_end, self.begin + 1)
            if first_scored < end:
                yield self.begin, end, first_scored
            self.prev_end = end
            self.done = final and end == available
            self.begin += self.stride


DEFAULT_WINDOW = 512


def check_window(model: ExportedModel, window: int | None, stride: int | None) -> tuple[int, int]:
    """Validate window and stride and fill defaults: window min(512, context), stride = window."""
    if window is None:
        window = min(DEFAULT_WINDOW, model.max_positions)
    if window < 2:
        raise ValueError(f"--window must be >= 2 tokens, got {window}")
    if window > model.max_positions:
        raise ValueError(
            f"--window {window} exceeds the model's context "
            f"{model.max_positions} (max_position_embeddings)"
        )
    stride = window if stride is None else stride
    if not 1 <= stride <= window:
        raise ValueError(f"--stride must be between 1 and --window ({window}), got {stride}")
    return window, stride


_ROWS_PER_CHUNK = 64  # float64 copies of 64 rows x 50k vocab: ~25 MB, not the whole window's


def _window_nll(model: ExportedModel, ids: np.ndarray, first: int) -> float:
    """Sum of -log p(ids[t] | ids[:t]) for t in [first, len(ids)), one forward from empty."""
    n = len(ids)
    logits, _ = model.forward(
        ids[None, :],
        np.ones((1, n), dtype=np.int64),
        np.arange(n, dtype=np.int64)[None, :],
        model.empty_past(1),
    )
    total = 0.0
    for start in range(first, n, _ROWS_PER_CHUNK):
        stop = min(start + _ROWS_PER_CHUNK, n)
        scores = logits[0, start - 1 : stop - 1].astype(np.float64)  # row t-1 predicts token t
        top = scores.max(axis=-1)
        log_norm = top + np.log(np.exp(scores - top[:, None]).sum(axis=-1))
        target = scores[np.arange(stop - start), ids[start:stop]]
        total += float((log_norm - target).sum())
    return total


def perplexity(
    model: ExportedModel,
    token_ids: Sequence[int],
    window: int | None = None,
    stride: int | None = None,
    max_tokens: int | None = None,
) -> dict[str, float | int]:
    """Perplexity of `token_ids` (see the module docstring for the exact convention).

    Returns perplexity, nll (mean per scored token), tokens (evaluated, after max_tokens),
    scored (tokens that got a prediction), windows, window, stride.
    """
    return perplexity_stream(
        model, iter([np.asarray(token_ids, dtype=np.int64)]), window, stride, max_tokens
    )


def perplexity_stream(
    model: ExportedModel,
    chunks: Iterator[np.ndarray],
    window: int | None = None,
    stride: int | None = None,
    max_tokens: int | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> dict[str, float | int]:
    """`perplexity` over token ids that arrive in chunks (runtime_demo/text_stream.py).

    Holds at most one window plus one chunk of ids; reading stops at `max_tokens`.
    `on_progress(end)` is called after each window, `end` the token index it scored up to.
    """
    window, stride = check_window(model, window, stride)
    if max_tokens is not None and max_tokens < 2:
        raise ValueError(f"--max-tokens must be >= 2, got {max_tokens}")
    cursor = _Windows(window, stride)
    held = np.empty(0, dtype=np.int64)  # ids[base:]
    base = total = scored = n_windows = 0
    total_nll = 0.0
    final = False
    while not final:
        chunk = next(chunks, None)
        final = chunk is None
        if chunk is not None:
            if max_tokens is not None:
                chunk = chunk[: max_tokens - total]
                final = total + len(chunk) >= max_tokens
            model.check_token_ids(chunk)
            held = np.concatenate([held, chunk])
            total += len(chunk)
        if final and total < 2:
            raise ValueError(f"the text has {total} token(s); perplexity needs at least 2")
        for begin, end, first in cursor.ready(total, final):
            total_nll += _window_nll(model, held[begin - base : end - base], first - begin)
            scored += end - first
            n_windows += 1
            if on_progress is not None:
                on_progress(end)
        drop = min(cursor.begin, total) - base  # no later window starts before cursor.begin
        held, base = held[drop:], base + drop
    mean = total_nll / scored
    return {
        "perplexity": math.exp(mean),
        "nll": mean,
        "tokens": int(total),
        "scored": scored,
        "windows": n_windows,
        "window": window,
        "stride": stride,
    }


def text_perplexity(
    model: ExportedModel,
    tokenizer,
    path: str,
    window: int | None = None,
    stride: int | None = None,
    max_tokens: int | None = None,
    progress: bool = False,
) -> dict[str, float | int]:
    """`perplexity` of a UTF-8 text file, tokenized and scored as a stream (bounded memory;
    runtime_demo/text_stream.py), with progress on stderr when asked."""
    from .text_stream import Progress, encode_stream, read_pieces, text_bytes

    bar = Progress(text_bytes(path), progress)
    # (tokens, bytes) at the ends of the chunks read so far: a window's end token maps to about
    # how far into the file it is, so the bar moves per window, not per 1 MB chunk.
    marks: deque[tuple[int, int]] = deque([(0, 0)])

    def chunks() -> Iterator[np.ndarray]:
        tokens = 0
        for ids, done in encode_stream(tokenizer, read_pieces(path)):
            tokens += len(ids)
            marks.append((tokens, done))
            yield ids

    def on_window(end: int) -> None:
        while len(marks) > 2 and marks[1][0] < end:
            marks.popleft()
        (t0, b0), (t1, b1) = marks[0], marks[min(1, len(marks) - 1)]
        bar.update(b1 if t1 <= t0 else b0 + (b1 - b0) * (end - t0) // (t1 - t0), end)

    try:
        return perplexity_stream(model, chunks(), window, stride, max_tokens, on_window)
    finally:
        bar.close()
