"""Calibration statistics of a model on a text, for sensitivity-aware table coding.

    counts  token occurrences in the whole text (tokenizer only)
    c_in    sum over positions of g g^T, g = d(loss)/d(input embedding)   (input side)
    c_h     sum over positions of h h^T, h = the LM head's input           (output side)
    h_sum   sum over positions of h (the tied head's logit bias, tt_ops/transform_code.py)
    (and, apart, `head_states`: every h itself, for the tied head's per-row logit gain)
    q       sum over positions of the predicted distribution (output-side row weight)

The coder uses M = (c_in + c_h) / n as the metric in which a row's error is measured (error e
costs about e^T M e of loss) and a row importance mixed from these statistics and priors
(tt_ops/row_prior.py). Statistics come from text the model generates (export/
generated_calibration.py) and, when given, a user text that is not the evaluation text;
both are cached under ~/.cache/tensorgpt/calibration, keyed by the model's weights.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np

from tensorgpt.common.files import write_atomic
from tensorgpt.common.progress import track
from tensorgpt.models import ModelAdapter

WINDOW = 512
# Version of the statistics' contents, part of every cache key: 2 added h_sum.
STATS_VERSION = 2
Q_CHUNK = 64  # positions per float64 softmax in window_stats (the same sums but for rounding order)


def window_for(adapter: ModelAdapter) -> int:
    """WINDOW, or the model's context if it is shorter (a window past it indexes positions
    the model does not have: an IndexError for GPT-2's 256-position tiny models)."""
    return min(WINDOW, adapter.shape().max_position_embeddings or WINDOW)


def window_stats(adapter: ModelAdapter, windows: np.ndarray) -> dict[str, np.ndarray]:
    """c_in, c_h, h_sum, q and n_pos (see the module docstring) over token windows (n, L), one
    forward and backward per window. Only d(loss)/d(input embedding) is needed, so the weights'
    own gradients are switched off while it runs (about half the backward's work)."""
    import torch

    model = adapter.model
    # a table error d in a raw row reaches the body as d * scale (Gemma's scaled embedding)
    scale = adapter.embedding_scale() or 1.0
    emb = adapter.token_embedding()
    vocab, dim = emb.weight.shape
    c_in = torch.zeros(dim, dim, dtype=torch.float64)
    c_h = torch.zeros(dim, dim, dtype=torch.float64)
    h_sum = torch.zeros(dim, dtype=torch.float64)
    q = torch.zeros(vocab, dtype=torch.float64)
    n_pos = 0
    captured = {}
    hook = adapter.lm_head().register_forward_hook(lambda m, i, o: captured.__setitem__("h", i[0]))
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        # seconds per window for a 135M model on 2 cores: show progress and the time left
        rows = np.asarray(windows, dtype=np.int64)
        for row in track(rows, "[export] calibration (forward + backward)", unit="window"):
            x = torch.from_numpy(row)[None]
            e = emb(x).detach().requires_grad_(True)
            logits = model(inputs_embeds=e, use_cache=False).logits[0, :-1]
            loss = torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="sum")
            loss.backward()
            g = e.grad[0].double() * scale
            c_in += g.T @ g
            h = captured["h"][0, :-1].detach().double()
            c_h += h.T @ h
            h_sum += h.sum(0)
            # the predicted distributions in float64, a few positions at a time: a whole
            # window's would be L x V x 8 bytes twice over (2 GB at a 262k vocabulary)
            for s in range(0, logits.shape[0], Q_CHUNK):
                part = logits[s : s + Q_CHUNK].detach().double()
                q += torch.softmax(part, -1)[:, :vocab].sum(0)
            n_pos += logits.shape[0]
    finally:
        hook.remove()
        for p, flag in flags:
            p.requires_grad_(flag)
    return {
        "q": q.numpy(),
        "c_in": c_in.numpy(),
        "c_h": c_h.numpy(),
        "h_sum": h_sum.numpy(),
        "n_pos": np.array(n_pos),
    }


def head_states(adapter: ModelAdapter, windows: np.ndarray) -> np.ndarray:
    """(n * (L - 1), D) float32: the LM head's input at every position of the token windows
    (n, L) that predicts a next token (as window_stats counts them), for the tied head's
    per-row logit gain (tt_ops/head_gain.py). Forward only, one window at a time."""
    import torch

    captured = {}
    hook = adapter.lm_head().register_forward_hook(lambda m, i, o: captured.__setitem__("h", i[0]))
    out = []
    try:
        with torch.no_grad():
            for row in np.asarray(windows, dtype=np.int64):
                adapter.model(input_ids=torch.from_numpy(row)[None], use_cache=False)
                out.append(captured["h"][0, :-1].float().numpy())
    finally:
        hook.remove()
    return np.concatenate(out)


def text_ids(tokenizer, text: str) -> np.ndarray:
    """The token ids of `text` (int64), without special tokens."""
    return np.asarray(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=np.int64)


def token_counts(ids: np.ndarray, vocab: int) -> np.ndarray:
    """(vocab,) float64 occurrences of each id in `ids` (ids past the table are left out)."""
    ids = np.asarray(ids).reshape(-1)
    return np.bincount(ids[ids < vocab], minlength=vocab).astype(np.float64)


def compute_stats(
    adapter: ModelAdapter, tokenizer, text: str, n_windows: int = 16
) -> dict[str, np.ndarray]:
    """Token counts over `text` and model statistics over `n_windows` evenly spaced windows."""
    ids = text_ids(tokenizer, text)
    counts = token_counts(ids, adapter.token_embedding().weight.shape[0])
    window = min(window_for(adapter), len(ids))
    if window < 2:
        raise ValueError("--calib-text: fewer than 2 tokens")
    n = max(1, min(n_windows, len(ids) // window))
    starts = np.linspace(0, len(ids) - window, n).astype(int)
    stats = window_stats(adapter, np.stack([ids[s : s + window] for s in starts]))
    return {"counts": counts, **stats, "n_tokens": np.array(len(ids))}


def default_cache_dir() -> Path:
    """~/.cache/tensorgpt/calibration (or under $XDG_CACHE_HOME)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tensorgpt" / "calibration"


def model_fingerprint(adapter: ModelAdapter, tokenizer) -> str:
    """sha256 over every parameter's bytes (in name order) and the tokenizer's vocabulary and
    chat template: the key under which a model's calibration statistics are cached."""
    h = hashlib.sha256()
    for name, p in sorted(adapter.model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    h.update(str(getattr(tokenizer, "chat_template", "")).encode())
    return h.hexdigest()


def cached_arrays(cache_dir: Path, what: str, settings: dict, make) -> dict[str, np.ndarray]:
    """The arrays cached for (what, settings) in cache_dir, or `make()` stored there first
    (one atomic write: an interrupted export leaves no half file)."""
    key = hashlib.sha256(json.dumps({"what": what, **settings}, sort_keys=True).encode())
    path = Path(cache_dir) / f"{what}-{key.hexdigest()[:24]}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    arrays = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    write_atomic(path, buf.getvalue())
    return arrays


def text_stats(
    adapter: ModelAdapter, tokenizer, text: str, fingerprint: str, cache_dir: Path
) -> dict[str, np.ndarray]:
    """compute_stats, cached by the model's fingerprint and the text's sha256."""
    settings = {
        "model": fingerprint,
        "text_sha256": hashlib.sha256(text.encode()).hexdigest(),
        "windows": 16,
        "window": WINDOW,
        "stats": STATS_VERSION,
    }
    return cached_arrays(
        cache_dir, "text-stats", settings, lambda: compute_stats(adapter, tokenizer, text)
    )


def sensitivity_metric(stats: dict[str, np.ndarray]) -> np.ndarray:
    """M = (c_in + c_h) / n: the (D, D) metric the coder whitens rows by."""
    n = float(stats["n_pos"])
    return stats["c_in"] / n + stats["c_h"] / n


def head_mean(stats: dict[str, np.ndarray]) -> np.ndarray:
    """E[h] = h_sum / n: the mean input of the LM head (D,), for the tied head's logit bias."""
    return stats["h_sum"] / float(stats["n_pos"])
