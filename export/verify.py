"""Built-in parity check: the written ONNX file against PyTorch running the same weights.

A 16-token prompt, then 8 greedy decode steps through the KV cache. PyTorch picks the tokens;
onnxruntime is fed the same tokens (so one early disagreement cannot cascade) and must pick
the same argmax at every step. fp32 files must agree within `parity_tolerance` on every logit;
a file with int8 MatMuls reports its difference and the cross-entropy change on the same tokens.

The tolerance follows the logits' scale. onnxruntime and PyTorch sum in different orders, so an
fp32 file differs from PyTorch by rounding that grows with the values it rounds. Measured on
`--method none` (benchmarks/parity_scale.py; docs/results.md "The parity check's tolerance"),
random Qwen2-family checkpoints: the max |difference| went from 1.2e-6 to 2.0e-3 as the logits
grew (init std 0.02 to 0.64), did not change with the vocabulary (384 to 151936), and grew
with width (64 to 896) and depth (2 to 16 layers; 24 no further); relative to the reference's
max |logit| it stayed at or below 4.2e-5. So a file passes within
max(FP32_TOLERANCE, FP32_RELATIVE x max |reference logit|): the old absolute 1e-3 for the small
logits of trained and tiny models, 1e-4 of the largest logit (2.4x the largest rounding
measured) above it. A wrong file (a missing scale, a wrong row or weight) moves logits by a
share of their own size: 0.5% in one norm vector fails by more than 10x
(tests/export/test_verify.py).
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import numpy as np
import torch

from tensorgpt.common.contract import (
    ATTENTION_MASK,
    BODY_FILE,
    DECODE_FILE,
    INPUT_IDS,
    MODEL_FILE,
    POSITION_IDS,
    past_names,
)
from tensorgpt.common.ort_load import open_split_session, session_options
from tensorgpt.models import ModelAdapter
from tensorgpt.models.cache_api import cache_argument, returned_cache

FP32_TOLERANCE = 1e-3  # absolute floor (and the split load's check: same kernels both sides)
FP32_RELATIVE = 1e-4  # x the reference's max |logit|: rounding measured at <= 4.2e-5 of it
PROMPT_TOKENS = 16
DECODE_STEPS = 8
_PROMPT = (
    "The tower is 324 metres tall, about the same height as an 81-storey building, and the "
    "tallest structure in Paris. Its base is square, measuring 125 metres on each side."
)


def prompt_ids(tokenizer, vocab_size: int) -> np.ndarray:
    """16 ids of a fixed English sentence (repeated if the tokenizer is very coarse)."""
    ids = [i for i in tokenizer(_PROMPT, add_special_tokens=False)["input_ids"] if i < vocab_size]
    while len(ids) < PROMPT_TOKENS:
        ids = ids + (ids or [0])
    return np.asarray(ids[:PROMPT_TOKENS], dtype=np.int64)[None, :]


def _torch_run(model, ids: np.ndarray) -> tuple[list[np.ndarray], list[int]]:
    """Logits of the prompt and of each greedy step, and the greedy tokens."""
    cache = cache_argument(model)
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(ids), use_cache=True)
        logits, past = [out.logits[0].float().numpy()], returned_cache(out)
        tokens = []
        for _ in range(DECODE_STEPS):
            nxt = int(logits[-1][-1].argmax())
            tokens.append(nxt)
            out = model(input_ids=torch.tensor([[nxt]]), **{cache: past}, use_cache=True)
            logits.append(out.logits[0].float().numpy())
            past = returned_cache(out)
    return logits, tokens


def empty_past(shape) -> dict[str, np.ndarray]:
    """The KV cache inputs of a first forward, batch 1 (`shape`: num_layers, num_kv_heads,
    head_dim)."""
    empty = np.zeros((1, shape.num_kv_heads, 0, shape.head_dim), np.float32)
    return {name: empty for name in past_names(shape.num_layers)}


def step_feeds(ids: np.ndarray, total: int, past: dict) -> dict[str, np.ndarray]:
    """The graph inputs for `ids` (1, seq) after `total` cached tokens, batch 1."""
    seq = ids.shape[1]
    return {
        INPUT_IDS: ids,
        ATTENTION_MASK: np.ones((1, total + seq), np.int64),
        POSITION_IDS: np.arange(total, total + seq, dtype=np.int64)[None, :],
        **past,
    }


def _ort_run(session, shape, ids: np.ndarray, tokens: list[int]) -> list[np.ndarray]:
    """Logits of the prompt, then of each of `tokens` fed one at a time through the cache."""
    names = past_names(shape.num_layers)
    past = empty_past(shape)
    feed_ids, logits, total = ids, [], 0
    for step in range(len(tokens) + 1):
        seq = feed_ids.shape[1]
        outputs = session.run(None, step_feeds(feed_ids, total, past))
        logits.append(outputs[0][0])
        past = dict(zip(names, outputs[1:]))
        total += seq
        if step < len(tokens):
            feed_ids = np.asarray([[tokens[step]]], dtype=np.int64)
    return logits


def check_split(folder, shape, ids: np.ndarray, tokens: list[int]) -> dict:
    """The split load (decode.onnx + body.onnx) against model.onnx, both in onnxruntime: a
    prompt `ids` (1, n), then `tokens` fed one by one; they must give the same logits.
    `shape` needs num_layers, num_kv_heads and head_dim."""
    import onnxruntime as ort

    whole = ort.InferenceSession(
        str(folder / MODEL_FILE), session_options(None), providers=["CPUExecutionProvider"]
    )
    expected = _ort_run(whole, shape, ids, tokens)
    del whole  # one folded session at a time
    # the runtime's own loader, so the check covers exactly what `tensorgpt run` will do
    split = open_split_session(
        folder / DECODE_FILE, folder / BODY_FILE, session_options(None), threads=None
    )
    got = _ort_run(split, shape, ids, tokens)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(expected, got))
    return {"max_abs_logit_diff_vs_model_onnx": diff, "passed": diff <= FP32_TOLERANCE}


def parity_tolerance(reference_max_abs_logit: float) -> float:
    """The largest |ONNX - PyTorch| logit difference an fp32 file may show:
    max(FP32_TOLERANCE, FP32_RELATIVE * reference_max_abs_logit) (the module's docstring says
    why)."""
    return max(FP32_TOLERANCE, FP32_RELATIVE * reference_max_abs_logit)


def _mean_nll(logits: np.ndarray, targets: np.ndarray) -> float:
    z = logits - logits.max(axis=-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return float(-logp[np.arange(len(targets)), targets].mean())


def verify(model_path: str, model, adapter: ModelAdapter, tokenizer, quantized: bool) -> dict:
    """Run both sides and return the report; `passed` is False when fp32 parity fails."""
    shape = adapter.shape()
    ids = prompt_ids(tokenizer, shape.vocab_size)
    torch_logits, tokens = _torch_run(model, ids)
    return compare_with_onnx(model_path, shape, ids, torch_logits, tokens, quantized)


def torch_reference(model, adapter: ModelAdapter, tokenizer):
    """PyTorch's side of the check alone: (prompt ids, logits, greedy tokens), so a caller
    can free the model before onnxruntime loads the file (export/verify_layers.py)."""
    ids = prompt_ids(tokenizer, adapter.shape().vocab_size)
    return (ids, *_torch_run(model, ids))


def compare_with_onnx(
    model_path: str,
    shape,
    ids: np.ndarray,
    torch_logits,
    tokens: list[int],
    quantized: bool,
    fold: bool = True,
) -> dict:
    """onnxruntime's side on the same prompt and tokens, and the report.

    fold=False: the session runs the weight decode (q4 blocks, a coded table) at every step
    instead of constant-folding it at load, every other optimization on. Why: the folding
    pass holds all folded tensors until it ends (a 12-layer GPT-2-small tc + q4 file: 2.60 GB
    peak folded, 1.01 GB unfolded); the arithmetic is the same ops on the same values."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(
        model_path,
        options,
        providers=["CPUExecutionProvider"],
        disabled_optimizers=[] if fold else ["ConstantFolding"],
    )
    ort_logits = _ort_run(session, shape, ids, tokens)
    max_diff = max(float(np.abs(a - b).max()) for a, b in zip(torch_logits, ort_logits))
    ref_max = max(float(np.abs(a).max()) for a in torch_logits)
    ref_rms = math.sqrt(
        sum(float(np.square(a, dtype=np.float64).sum()) for a in torch_logits)
        / sum(a.size for a in torch_logits)
    )
    ort_tokens = [int(step[-1].argmax()) for step in ort_logits[:DECODE_STEPS]]
    # Cross-entropy of the prompt's own next tokens and of the decoded tokens, both sides:
    # the prompt's 16 rows predict ids[1:] and token 0; decode step k predicts token k.
    targets = np.concatenate([ids[0, 1:], np.asarray(tokens)])
    torch_seq = np.concatenate([torch_logits[0]] + [s for s in torch_logits[1:DECODE_STEPS]])
    ort_seq = np.concatenate([ort_logits[0]] + [s for s in ort_logits[1:DECODE_STEPS]])
    nll_torch, nll_ort = _mean_nll(torch_seq, targets), _mean_nll(ort_seq, targets)
    finite = all(np.isfinite(x).all() for x in ort_logits)
    greedy_match = ort_tokens == tokens
    # int8 MatMuls change the logits by design: report their cost, fail only on broken output.
    tolerance = parity_tolerance(ref_max)
    passed = finite if quantized else finite and greedy_match and max_diff <= tolerance
    return {
        "prompt_tokens": PROMPT_TOKENS,
        "decode_steps": DECODE_STEPS,
        "greedy_tokens": tokens,
        "greedy_match": greedy_match,
        "max_abs_logit_diff": max_diff,
        "reference_max_abs_logit": ref_max,
        "reference_logit_rms": ref_rms,
        "tolerance": None if quantized else tolerance,
        "perplexity_torch": math.exp(nll_torch),
        "perplexity_onnx": math.exp(nll_ort),
        "perplexity_change_percent": 100.0 * (math.exp(nll_ort - nll_torch) - 1.0),
        "passed": bool(passed),
    }


@contextmanager
def torch_logit_fix(adapter, embedding):
    """While open, PyTorch's LM head applies the tied table's logit correction as the graph
    does (export/assemble.py apply_logit_fix: logits * scale + (1 - scale) * anchor logits +
    bias, before any quirks)."""
    scale, bias = (None, None) if embedding is None else embedding.logit_fix()
    if scale is None and bias is None:
        yield
        return
    s = None if scale is None else torch.from_numpy(scale.astype(np.float32))
    b = None if bias is None else torch.from_numpy(bias.astype(np.float32))
    anchor = None if s is None else embedding.logit_anchor()
    if anchor is not None:
        rows, index = (torch.from_numpy(a) for a in anchor)

    def hook(module, inputs, out):
        if s is not None:
            fixed = out * s
            if anchor is not None:  # (1 - s) * hidden . rows[index[v]]
                fixed = fixed + (inputs[0] @ rows.T)[..., index] * (1 - s)
            out = fixed
        return out if b is None else out + b

    handle = adapter.lm_head().register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
