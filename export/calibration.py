"""Calibration statistics of a model on a text, for sensitivity-aware table coding.

    counts  token occurrences in the whole text (tokenizer only)
    c_in    sum over positions of g g^T, g = d(loss)/d(input embedding)   (input side)
    c_h     sum over positions of h h^T, h = the LM head's input           (output side)
    q       sum over positions of the predicted distribution (output-side row weight)

The coder uses the counts as row importance and M = (c_in + c_h) / n as the metric in which
a row's error is measured (error e costs about e^T M e of loss). Use text that is not the
evaluation text: reported perplexities use wikitext-2 test, calibration uses valid.
"""

from __future__ import annotations

import numpy as np

from tensorgpt.models import ModelAdapter

WINDOW = 512


def compute_stats(
    adapter: ModelAdapter, tokenizer, text: str, n_windows: int = 16
) -> dict[str, np.ndarray]:
    """Token counts over `text` and model statistics over `n_windows` evenly spaced windows.

    Each window is a forward and a backward pass of the whole model (seconds each for a
    135M model on 2 cores, minutes on a busy machine): the loop shows its progress and the
    time left (common/progress.py).
    """
    import torch

    from tensorgpt.common.progress import track

    model = adapter.model
    ids = np.asarray(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=np.int64)
    emb = adapter.token_embedding()
    vocab, dim = emb.weight.shape
    counts = np.bincount(ids[ids < vocab], minlength=vocab).astype(np.float64)
    window = min(WINDOW, len(ids))
    if window < 2:
        raise ValueError("--calib-text: fewer than 2 tokens")
    c_in = torch.zeros(dim, dim, dtype=torch.float64)
    c_h = torch.zeros(dim, dim, dtype=torch.float64)
    q = torch.zeros(vocab, dtype=torch.float64)
    n_pos = 0
    starts = np.linspace(0, len(ids) - window, max(1, min(n_windows, len(ids) // window))).astype(
        int
    )
    captured = {}
    head = adapter.lm_head()
    hook = head.register_forward_hook(lambda m, i, o: captured.__setitem__("h", i[0]))
    try:
        for s in track(starts, "[export] calibration (forward + backward)", unit="window"):
            x = torch.from_numpy(ids[s : s + window])[None]
            e = emb(x).detach().requires_grad_(True)
            logits = model(inputs_embeds=e, use_cache=False).logits[0, :-1]
            loss = torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="sum")
            loss.backward()
            g = e.grad[0].double()
            c_in += g.T @ g
            h = captured["h"][0, :-1].detach().double()
            c_h += h.T @ h
            q += torch.softmax(logits.detach().double(), -1).sum(0)
            n_pos += logits.shape[0]
    finally:
        hook.remove()
        model.zero_grad(set_to_none=True)
    return {
        "counts": counts,
        "q": q.numpy(),
        "c_in": c_in.numpy(),
        "c_h": c_h.numpy(),
        "n_pos": np.array(n_pos),
        "n_tokens": np.array(len(ids)),
    }


def sensitivity_metric(stats: dict[str, np.ndarray]) -> np.ndarray:
    """M = (c_in + c_h) / n: the (D, D) metric the coder whitens rows by."""
    n = float(stats["n_pos"])
    return stats["c_in"] / n + stats["c_h"] / n
