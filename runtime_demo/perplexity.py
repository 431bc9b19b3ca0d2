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
import sys
from collections.abc import Sequence

import numpy as np
from tqdm import tqdm

from .session import ExportedModel


def windows(n_tokens: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, first_scored) per window, for n_tokens tokens."""
    spans: list[tuple[int, int, int]] = []
    prev_end = 0
    for begin in range(0, n_tokens, stride):
        end = min(begin + window, n_tokens)
        first_scored = max(prev_end, begin + 1)
        if first_scored < end:
            spans.append((begin, end, first_scored))
        prev_end = end
        if end == n_tokens:
            break
    return spans


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
    progress: bool = False,
) -> dict[str, float | int]:
    """Perplexity of `token_ids` (see the module docstring for the exact convention).

    Returns perplexity, nll (mean per scored token), tokens (evaluated, after max_tokens),
    scored (tokens that got a prediction), windows, window, stride.
    """
    window, stride = check_window(model, window, stride)
    if max_tokens is not None and max_tokens < 2:
        raise ValueError(f"--max-tokens must be >= 2, got {max_tokens}")
    ids = np.asarray(token_ids, dtype=np.int64)[:max_tokens]
    if len(ids) < 2:
        raise ValueError(f"the text has {len(ids)} token(s); perplexity needs at least 2")
    model.check_token_ids(ids)
    spans = windows(len(ids), window, stride)
    total_nll = 0.0
    scored = 0
    # tqdm's disable=None hides the bar when stderr is not a terminal (logs, CI).
    show = progress and len(spans) > 1
    bar = tqdm(
        spans, desc="perplexity", unit="window", file=sys.stderr, disable=None if show else True
    )
    for begin, end, first in bar:
        total_nll += _window_nll(model, ids[begin:end], first - begin)
        scored += end - first
    bar.close()
    mean = total_nll / scored
    return {
        "perplexity": math.exp(mean),
        "nll": mean,
        "tokens": int(len(ids)),
        "scored": scored,
        "windows": len(spans),
        "window": window,
        "stride": stride,
    }
