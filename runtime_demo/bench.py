"""Speed and memory of one exported folder, measured in this process.

Numbers: session load time, time to first token (the prompt's forward plus the first greedy
choice), per-token decode latency (median, p90) and tokens per second, and memory: the RSS
before and after loading the session (the delta is what the session itself holds, including
constant-folded initializers), the peak RSS while the session loads (Linux: the high-water
mark is reset just before loading) and the process's peak RSS (VmHWM, ru_maxrss off Linux).
For a clean peak per model, run each bench in its own process (benchmarks/runtime_speed.py
does).
"""

from __future__ import annotations

import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

from .generate import position_ids_from_mask
from .machine import load_average, usable_cores
from .session import ExportedModel

_MB = 1024 * 1024


def current_rss_bytes() -> int | None:
    """Resident set size now (Linux /proc); None where /proc is absent."""
    try:
        with open("/proc/self/statm") as f:
            resident_pages = int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def reset_peak_rss() -> bool:
    """Start a new high-water mark, so that `peak_rss_bytes` measures from now on.

    Linux: writing 5 to /proc/self/clear_refs resets VmHWM to the current RSS. Returns False
    where that is not possible (then the peak is the whole process's)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def peak_rss_bytes() -> int:
    """This process's peak resident set size.

    Linux: VmHWM of /proc/self/status, the high-water mark of this process's own memory.
    ru_maxrss is the fallback elsewhere; on Linux it would be wrong for a child process, since
    it starts from the parent's peak at fork (a benchmark that exported a model first would see
    the exporter's gigabytes in every child).
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kilobytes, macOS bytes.
    return peak if sys.platform == "darwin" else peak * 1024


def _mb(value: int | None) -> float | None:
    return None if value is None else round(value / _MB, 1)


def _percentile_ms(samples: list[float], q: float) -> float:
    return round(float(np.percentile(samples, q)) * 1000, 3)


def check_lengths(model: ExportedModel, prompt_tokens: int, decode_tokens: int) -> None:
    if prompt_tokens < 1 or decode_tokens < 1:
        raise ValueError("--prompt-tokens and --decode-tokens must be >= 1")
    if prompt_tokens + decode_tokens > model.max_positions:
        raise ValueError(
            f"--prompt-tokens + --decode-tokens ({prompt_tokens + decode_tokens}) exceed the "
            f"model's context {model.max_positions} (max_position_embeddings)"
        )


def _timed_run(
    model: ExportedModel, prompt: np.ndarray, decode_tokens: int
) -> tuple[float, list[float]]:
    """One greedy generation: (seconds to first token, seconds per decode step)."""
    mask = np.ones((1, prompt.shape[1]), dtype=np.int64)
    start = time.perf_counter()
    logits, past = model.forward(
        prompt, mask, position_ids_from_mask(mask, prompt.shape[1]), model.empty_past(1)
    )
    token = np.argmax(logits[:, -1, :], axis=-1)
    ttft = time.perf_counter() - start
    steps: list[float] = []
    for _ in range(decode_tokens):
        start = time.perf_counter()
        mask = np.concatenate([mask, np.ones((1, 1), dtype=np.int64)], axis=1)
        logits, past = model.forward(token[:, None], mask, position_ids_from_mask(mask, 1), past)
        token = np.argmax(logits[:, -1, :], axis=-1)
        steps.append(time.perf_counter() - start)
    return ttft, steps


def bench(
    folder: str | Path,
    threads: int | None = None,
    prompt_tokens: int = 128,
    decode_tokens: int = 64,
    repeats: int = 3,
    seed: int = 0,
    split: bool = True,
    check_integrity: bool = True,
) -> dict[str, object]:
    """Load the folder and time greedy generation; see the module docstring for the fields."""
    if repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {repeats}")
    fresh_peak = reset_peak_rss()
    rss_before = current_rss_bytes()
    start = time.perf_counter()
    model = ExportedModel(folder, threads=threads, split=split, check_integrity=check_integrity)
    load_s = time.perf_counter() - start
    rss_after = current_rss_bytes()
    load_peak = peak_rss_bytes() if fresh_peak else None
    check_lengths(model, prompt_tokens, decode_tokens)
    # Random in-range ids: speed does not depend on which tokens, and no tokenizer is needed.
    rng = np.random.default_rng(seed)
    prompt = rng.integers(0, model.vocab_size, size=(1, prompt_tokens), dtype=np.int64)
    first_ttft, _ = _timed_run(model, prompt, min(2, decode_tokens))  # warm-up: lazy allocations
    ttfts: list[float] = []
    steps: list[float] = []
    for _ in range(repeats):
        ttft, run_steps = _timed_run(model, prompt, decode_tokens)
        ttfts.append(ttft)
        steps.extend(run_steps)
    return {
        "folder": str(model.folder),
        "method": model.manifest.method,
        "threads": threads or 0,  # 0: onnxruntime's default, one per core
        "prompt_tokens": prompt_tokens,
        "decode_tokens": decode_tokens,
        "repeats": repeats,
        "load_mode": model.load_mode,
        "integrity_checked": list(model.checked_files),
        "load_s": round(load_s, 4),
        "first_run_ttft_ms": round(first_ttft * 1000, 3),
        "ttft_ms": _percentile_ms(ttfts, 50),
        "decode_ms_median": _percentile_ms(steps, 50),
        "decode_ms_p90": _percentile_ms(steps, 90),
        "tokens_per_s": round(len(steps) / sum(steps), 2),
        "rss_before_load_mb": _mb(rss_before),
        "rss_after_load_mb": _mb(rss_after),
        "rss_load_delta_mb": _mb(
            None if rss_before is None or rss_after is None else rss_after - rss_before
        ),
        "load_peak_rss_mb": _mb(load_peak),
        "peak_rss_mb": _mb(peak_rss_bytes()),
        # The machine when the timing ended: other work only ever adds time (machine.py).
        "cpus": usable_cores(),
        "load_average_1min": load_average(),
    }
