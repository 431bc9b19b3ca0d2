"""Calibration that needs no user text: what the model itself generates (issue 19).

The transform code needs token frequencies and a loss-sensitivity metric (export/
calibration.py). Without a user text they come from text the model samples:

- starts: the end-of-text token (what follows is any new document), the BOS token where it
  differs, and the chat template's user turn where the tokenizer has one; the sequences are
  spread evenly over them;
- sampling at temperature 1 with no top-k/top-p (the model's own distribution), seeded, all
  sequences of one start in one batch, a fixed length (end-of-text is not sampled early);
- the statistics are those of export/calibration.py on these windows; the row importance uses
  the predicted distributions summed over positions (`q`, the model's expected token counts:
  every token gets mass, unlike sampled counts), see tt_ops/row_prior.py.

Everything is keyed by the model's weights, tokenizer and these settings, and cached, so a
second export of the same model reuses it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class GenerationConfig:
    sequences: int = 8  # windows of generated text (the metric uses every position)
    length: int = 512  # tokens per window (export/calibration.py's WINDOW)
    seed: int = 0

    def validate(self) -> None:
        if self.sequences < 1 or self.length < 2:
            raise ValueError(
                f"generated calibration: need >= 1 sequence of >= 2 tokens, got {self}"
            )


def generation_starts(tokenizer) -> list[list[int]]:
    """Short starts (token id lists): end-of-text, BOS if different, the chat user turn."""
    starts: list[list[int]] = []
    for t in (tokenizer.eos_token_id, tokenizer.bos_token_id):
        if t is not None and [t] not in starts:
            starts.append([int(t)])
    if getattr(tokenizer, "chat_template", None):
        marker = "\x00MARK\x00"
        text = tokenizer.apply_chat_template([{"role": "user", "content": marker}], tokenize=False)
        prefix = text[: text.index(marker)]
        ids = tokenizer(prefix, add_special_tokens=False)["input_ids"]
        if ids and ids not in starts:
            starts.append([int(i) for i in ids])
    if not starts:
        raise ValueError("generated calibration: the tokenizer has no EOS, BOS or chat template")
    return starts


def generate_windows(model, tokenizer, config: GenerationConfig) -> np.ndarray:
    """(sequences, length) int64 token ids sampled from the model at temperature 1.

    All sequences go through one `generate` call with the KV cache: the starts are left-padded
    to one length (masked out), so the model runs `length` batched decode steps instead of
    `length` steps per start. A decode step of a small model costs about the same for 1 or 8
    sequences on a CPU (it reads every weight once), so this is the number of starts times
    faster than one call per start. A progress line (or bar) counts the steps."""
    import torch

    config.validate()
    starts = generation_starts(tokenizer)
    seqs = [starts[k % len(starts)] for k in range(config.sequences)]
    seqs.sort(key=len)  # deterministic order, independent of how the starts were listed
    width = max(len(s) for s in seqs)
    pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else starts[0][0]
    x = torch.tensor([[pad] * (width - len(s)) + s for s in seqs], dtype=torch.long)
    mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], dtype=torch.long)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(config.seed)
    progress = _Progress(config)
    try:
        with torch.no_grad():
            y = model.generate(
                x,
                attention_mask=mask,
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                max_new_tokens=config.length,
                min_new_tokens=config.length,
                pad_token_id=pad,
                logits_processor=[progress],
            )
        progress.finish()
    finally:
        torch.random.set_rng_state(generator_state)
    return y[:, width : width + config.length].numpy().astype(np.int64)


class _Progress:
    """A logits processor that only counts decode steps (common/progress.py's `track`)."""

    def __init__(self, config: GenerationConfig) -> None:
        from tensorgpt.common.progress import track

        what = f"[export] sampling {config.sequences} x {config.length} calibration tokens"
        self._steps = iter(track(range(config.length), what, unit="token"))

    def __call__(self, input_ids, scores):
        next(self._steps, None)
        return scores

    def finish(self) -> None:
        for _ in self._steps:  # the "done in" line
            pass


def generated_stats(
    adapter, tokenizer, config: GenerationConfig, fingerprint: str, cache_dir: Path
) -> dict[str, np.ndarray]:
    """export/calibration.py's statistics on the model's own samples, plus the sampled ids'
    counts; cached by the model's fingerprint and `config`. The sampled ids are cached on their
    own ("generated-ids"), so a new version of the statistics does not sample again."""
    from tensorgpt.export.calibration import STATS_VERSION, cached_arrays, window_stats

    settings = _settings(fingerprint, config)

    def make() -> dict[str, np.ndarray]:
        ids = generated_ids(adapter, tokenizer, config, fingerprint, cache_dir)
        vocab = adapter.token_embedding().weight.shape[0]
        counts = np.bincount(ids[ids < vocab].reshape(-1), minlength=vocab).astype(np.float64)
        stats = window_stats(adapter, ids)
        return {"ids": ids, "counts": counts, **stats, "n_tokens": np.array(ids.size)}

    return cached_arrays(cache_dir, "generated-stats", {**settings, "stats": STATS_VERSION}, make)


def generated_ids(
    adapter, tokenizer, config: GenerationConfig, fingerprint: str, cache_dir: Path
) -> np.ndarray:
    """`generate_windows` (it shows its own progress), cached for the next export by the
    model's fingerprint and `config`."""
    from tensorgpt.export.calibration import cached_arrays

    return cached_arrays(
        cache_dir,
        "generated-ids",
        _settings(fingerprint, config),
        lambda: {"ids": generate_windows(adapter.model, tokenizer, config)},
    )["ids"]


def generated_head_states(
    adapter, tokenizer, config: GenerationConfig, fingerprint: str, cache_dir: Path
) -> np.ndarray:
    """(positions, D) float32: the LM head's inputs on the model's own samples (the windows of
    `generated_stats`), for the tied head's per-row logit gain; cached like the statistics."""
    from tensorgpt.export.calibration import cached_arrays, head_states

    ids = generated_stats(adapter, tokenizer, config, fingerprint, cache_dir)["ids"]
    return cached_arrays(
        cache_dir,
        "generated-head-states",
        _settings(fingerprint, config),
        lambda: {"h": head_states(adapter, ids)},
    )["h"]


def _settings(fingerprint: str, config: GenerationConfig) -> dict:
    # "sampler" names the sampling code: 2 = all starts in one batched call (one RNG stream)
    return {"model": fingerprint, "sampler": 2, **asdict(config)}
