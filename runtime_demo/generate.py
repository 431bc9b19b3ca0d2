"""Token generation through the KV cache: prompt once, then one token per forward.

Batches are left-padded (docs/architecture.md): every row's last column is its newest token,
so one logits column serves all rows, and `position_ids` restart at 0 on each row's first real
token, which makes a padded row compute what it would alone.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .sampling import Sampler, SamplingConfig
from .session import ExportedModel

FINISHED = -1  # the token reported for a row that stopped at EOS on an earlier step


@dataclass
class Generation:
    """One prompt's result. `ids` are the new tokens (EOS included when it was produced)."""

    prompt_ids: list[int]
    ids: list[int]
    finish_reason: str  # "eos", "length" (max_new_tokens) or "context" (model's positions)


def position_ids_from_mask(attention_mask: np.ndarray, seq: int) -> np.ndarray:
    """The contract's positions: max(cumsum(mask) - 1, 0), last `seq` columns."""
    positions = np.maximum(np.cumsum(attention_mask, axis=1) - 1, 0)
    return positions[:, -seq:].astype(np.int64)


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask), both (batch, longest), padding on the left."""
    longest = max(len(p) for p in prompts)
    ids = np.full((len(prompts), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(prompts), longest), dtype=np.int64)
    for row, prompt in enumerate(prompts):
        if len(prompt):
            ids[row, longest - len(prompt) :] = prompt
            mask[row, longest - len(prompt) :] = 1
    return ids, mask


def pad_token_id(model: ExportedModel) -> int:
    """Any in-range id works under a 0 mask; prefer the model's own pad, then EOS."""
    config = model.config
    for candidate in (config.pad_token_id, *config.eos_token_ids):
        if candidate is not None and 0 <= candidate < config.vocab_size:
            return candidate
    return 0


def check_prompts(model: ExportedModel, prompts: Sequence[Sequence[int]]) -> None:
    if not prompts:
        raise ValueError("no prompt given")
    for i, prompt in enumerate(prompts):
        where = "the prompt" if len(prompts) == 1 else f"prompt {i + 1}"
        if len(prompt) == 0:
            raise ValueError(f"{where} is empty (it encodes to no tokens)")
        if len(prompt) > model.max_positions:
            raise ValueError(
                f"{where} has {len(prompt)} tokens; the model's context is "
                f"{model.max_positions} (max_position_embeddings)"
            )
        model.check_token_ids(np.asarray(prompt, dtype=np.int64), what=f"{where}: token id")


def generate_steps(
    model: ExportedModel,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int = 64,
    sampling: SamplingConfig | None = None,
    eos_token_ids: Sequence[int] | None = None,
) -> Iterator[np.ndarray]:
    """Yield, per step, the (batch,) new tokens; FINISHED (-1) for rows already done.

    Stops when every row has produced an EOS, after `max_new_tokens`, or when the next
    token would not fit in the model's positions. `eos_token_ids` defaults to the manifest's.
    """
    check_prompts(model, prompts)
    if max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be >= 1, got {max_new_tokens}")
    eos = np.asarray(
        model.config.eos_token_ids if eos_token_ids is None else list(eos_token_ids),
        dtype=np.int64,
    )
    sampler = Sampler(sampling or SamplingConfig())
    input_ids, mask = left_pad(prompts, pad_token_id(model))
    # The last token sampled is never fed back, so it may sit one past the positions.
    budget = min(max_new_tokens, model.max_positions - input_ids.shape[1] + 1)
    past = model.empty_past(len(prompts))
    logits, past = model.forward(
        input_ids, mask, position_ids_from_mask(mask, input_ids.shape[1]), past
    )
    finished = np.zeros(len(prompts), dtype=bool)
    for step in range(budget):
        tokens = np.where(finished, FINISHED, sampler(logits[:, -1, :]))
        yield tokens
        finished |= np.isin(tokens, eos)
        if finished.all() or step == budget - 1:
            return
        # Finished rows keep running (batch shapes stay fixed) on a harmless in-range token.
        feed = np.where(finished, pad_token_id(model), tokens)[:, None]
        mask = np.concatenate([mask, np.ones((len(prompts), 1), dtype=np.int64)], axis=1)
        logits, past = model.forward(feed, mask, position_ids_from_mask(mask, 1), past)


def generate(
    model: ExportedModel,
    prompt_ids: Sequence[int],
    max_new_tokens: int = 64,
    sampling: SamplingConfig | None = None,
    eos_token_ids: Sequence[int] | None = None,
) -> Iterator[int]:
    """Yield one prompt's new tokens as they are produced (EOS included, then stop)."""
    for tokens in generate_steps(model, [prompt_ids], max_new_tokens, sampling, eos_token_ids):
        yield int(tokens[0])


def finish_reason(ids: Sequence[int], max_new_tokens: int, eos_token_ids: Sequence[int]) -> str:
    if ids and ids[-1] in eos_token_ids:
        return "eos"
    return "length" if len(ids) >= max_new_tokens else "context"


def stop_words(reason: str, max_new_tokens: int, context: int) -> str:
    """A finish reason as the user reads it: why generation stopped where it did."""
    return {
        "eos": "stopped: end-of-sequence token",
        "length": f"stopped: max new tokens ({max_new_tokens}, --max-new-tokens)",
        "context": f"stopped: the model's context is full ({context} positions)",
    }[reason]


def generate_batch(
    model: ExportedModel,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int = 64,
    sampling: SamplingConfig | None = None,
    eos_token_ids: Sequence[int] | None = None,
) -> list[Generation]:
    """Run all prompts as one left-padded batch and return each one's tokens."""
    eos = list(model.config.eos_token_ids if eos_token_ids is None else eos_token_ids)
    outputs: list[list[int]] = [[] for _ in prompts]
    for tokens in generate_steps(model, prompts, max_new_tokens, sampling, eos):
        for row, token in enumerate(tokens):
            if token != FINISHED:
                outputs[row].append(int(token))
    return [
        Generation(list(prompt), ids, finish_reason(ids, max_new_tokens, eos))
        for prompt, ids in zip(prompts, outputs)
    ]
