"""Decode speed and memory: TT-compressed vs uncompressed ONNX file, and onnxruntime vs PyTorch.

One model, batch 1, one run:
- `tensorgpt bench` on the uncompressed export and on the TT export (targets: TT decode
  latency <= 1.05x the uncompressed file's; the TT head is constant-folded at session load);
- PyTorch eager HF `generate` with the KV cache on the same weights as the uncompressed file
  (target: onnxruntime decode >= 1.5x faster);
- every measurement in its own subprocess, so each peak RSS (VmHWM) is that session's alone;
- the two ONNX files are measured in alternating rounds (--rounds) and each keeps its round
  with the lowest median decode latency: on a shared machine the least-disturbed run is the
  closest to the file's own speed, and alternating spreads any load drift over both files.

    python benchmarks/runtime_speed.py                       # exports smollm2-135m if needed
    python benchmarks/runtime_speed.py --dense OUT1 --tt OUT2 --json

Exports are built with the exporter when not given (into --work-dir, reused on the next run).
This is a benchmark, not a test: it imports torch and takes minutes on the real model.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tensorgpt.common.contract import MANIFEST_FILE, Manifest

_ROOT = Path(__file__).resolve().parents[1]


def _ensure_export(source: str, folder: Path, method: str, rank: int | None) -> Path:
    """Export `source` into `folder` unless a finished export is already there."""
    if (folder / MANIFEST_FILE).is_file():
        return folder
    from tensorgpt.export.compress import CompressionSpec
    from tensorgpt.export.exporter import export_model

    spec = CompressionSpec(method=method, rank=rank if method != "none" else None)
    folder.parent.mkdir(parents=True, exist_ok=True)
    print(f"[bench] exporting {source} ({method}) to {folder}", file=sys.stderr, flush=True)
    export_model(source, folder, spec=spec)
    return folder


def _run_json(argv: list[str]) -> dict:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(argv)}\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def ort_bench(folder: Path, args: argparse.Namespace) -> dict:
    return _run_json(
        [
            sys.executable,
            "-m",
            "tensorgpt.cli",
            "bench",
            str(folder),
            "--json",
            *_timing_args(args),
        ]
    )


def _timing_args(args: argparse.Namespace) -> list[str]:
    """The options both sides are timed with, so the ONNX and PyTorch runs stay comparable."""
    return [
        "--threads",
        str(args.threads),
        "--prompt-tokens",
        str(args.prompt_tokens),
        "--decode-tokens",
        str(args.decode_tokens),
        "--repeats",
        str(args.repeats),
    ]


def torch_bench(source: str, args: argparse.Namespace) -> dict:
    return _run_json(
        [
            sys.executable,
            __file__,
            "--torch-worker",
            source,
            *_timing_args(args),
        ]
    )


def _torch_worker(args: argparse.Namespace) -> None:
    """In a subprocess: HF generate (greedy, cache on) timed per token with a streamer."""
    import numpy as np
    import torch
    from transformers.generation.streamers import BaseStreamer

    from tensorgpt.export.load import load
    from tensorgpt.runtime_demo.bench import peak_rss_bytes

    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    start = time.perf_counter()
    model = load(args.torch_worker).model
    load_s = time.perf_counter() - start

    class Clock(BaseStreamer):
        """`put` is called with the prompt, then once per new token: timestamp each call."""

        def __init__(self) -> None:
            self.times: list[float] = []

        def put(self, value) -> None:
            self.times.append(time.perf_counter())

        def end(self) -> None:
            pass

    rng = np.random.default_rng(0)  # same random prompt as `tensorgpt bench`
    prompt = rng.integers(0, model.config.vocab_size, size=(1, args.prompt_tokens), dtype=np.int64)
    ids = torch.from_numpy(prompt)

    def run(new_tokens: int) -> tuple[float, list[float]]:
        clock = Clock()
        start = time.perf_counter()
        with torch.no_grad():
            model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,  # no early EOS: every run times the same steps
                do_sample=False,
                use_cache=True,
                streamer=clock,
                pad_token_id=0,
            )
        # times[0]: prompt accepted; times[1]: first token; then one per decode step.
        return clock.times[1] - start, list(np.diff(clock.times[1:]))

    run(2)  # warm-up
    ttfts, steps = [], []
    for _ in range(args.repeats):
        ttft, run_steps = run(args.decode_tokens + 1)
        ttfts.append(ttft)
        steps.extend(run_steps)
    print(
        json.dumps(
            {
                "source": args.torch_worker,
                "threads": args.threads,
                "load_s": round(load_s, 3),
                "ttft_ms": round(float(np.median(ttfts)) * 1000, 3),
                "decode_ms_median": round(float(np.median(steps)) * 1000, 3),
                "decode_ms_p90": round(float(np.percentile(steps, 90)) * 1000, 3),
                "tokens_per_s": round(len(steps) / sum(steps), 2),
                "peak_rss_mb": round(peak_rss_bytes() / 2**20, 1),
            }
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", help="source to export and for PyTorch")
    parser.add_argument("--dense", type=Path, help="an existing uncompressed export (method none)")
    parser.add_argument(
        "--tt", type=Path, help="an existing TT-compressed export of the same model"
    )
    parser.add_argument("--tt-method", default="tt", help="method when exporting the TT file")
    parser.add_argument("--tt-rank", type=int, default=None, help="rank when exporting it")
    parser.add_argument("--work-dir", type=Path, default=_ROOT / "out" / "bench")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--decode-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per bench")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of ONNX benches")
    parser.add_argument("--skip-torch", action="store_true", help="only the two ONNX files")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--torch-worker", metavar="SOURCE", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.torch_worker:
        _torch_worker(args)
        return 0

    name = args.model.replace("/", "_")
    dense = args.dense or _ensure_export(args.model, args.work_dir / f"{name}-none", "none", None)
    tt = args.tt or _ensure_export(
        args.model, args.work_dir / f"{name}-{args.tt_method}", args.tt_method, args.tt_rank
    )
    sources = {Manifest.read(f).source for f in (dense, tt)}
    if len(sources) > 1:
        print(
            f"[bench] warning: the two exports come from different models: {sources}",
            file=sys.stderr,
        )
    results: dict = {"model": args.model, "threads": args.threads, "batch": 1}
    rounds: dict[str, list[dict]] = {"onnx_dense": [], "onnx_tt": []}
    for number in range(args.rounds):
        order = [("onnx_dense", dense), ("onnx_tt", tt)]
        for key, folder in order if number % 2 == 0 else order[::-1]:
            run = ort_bench(folder, args)
            rounds[key].append(run)
            # every timing with the load it ran at (a shared machine: only ratios mean much)
            print(
                f"[bench] round {number + 1} {key} ({folder.name}): "
                f"{run['decode_ms_median']:.2f} ms/token, 1-min load {run['load_average_1min']}",
                file=sys.stderr,
                flush=True,
            )
    for key, runs in rounds.items():
        results[key] = min(runs, key=lambda r: r["decode_ms_median"])
        results[key]["decode_ms_median_per_round"] = [r["decode_ms_median"] for r in runs]
    ratio = results["onnx_tt"]["decode_ms_median"] / results["onnx_dense"]["decode_ms_median"]
    results["tt_vs_dense_decode_ratio"] = round(ratio, 3)
    results["tt_vs_dense_target_met"] = ratio <= 1.05
    if not args.skip_torch:
        source = Manifest.read(dense).source
        results["torch_eager"] = torch_bench(source, args)
        speedup = (
            results["torch_eager"]["decode_ms_median"] / results["onnx_dense"]["decode_ms_median"]
        )
        results["onnx_vs_torch_decode_speedup"] = round(speedup, 3)
        results["onnx_vs_torch_target_met"] = speedup >= 1.5
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    rows = [("onnx_dense", dense), ("onnx_tt", tt)]
    if "torch_eager" in results:
        rows.append(("torch_eager", Path(results["torch_eager"]["source"])))
    print(
        f"{'':12s} {'load s':>7s} {'ttft ms':>8s} {'dec med':>8s} {'dec p90':>8s} {'tok/s':>7s} {'RSS MB':>7s}"
    )
    for key, _ in rows:
        r = results[key]
        print(
            f"{key:12s} {r['load_s']:7.2f} {r['ttft_ms']:8.1f} {r['decode_ms_median']:8.2f} "
            f"{r['decode_ms_p90']:8.2f} {r['tokens_per_s']:7.1f} {r['peak_rss_mb']:7.0f}"
        )
    print(f"TT / dense decode latency: {ratio:.3f}x (target <= 1.05x)")
    if "onnx_vs_torch_decode_speedup" in results:
        print(
            f"onnxruntime vs PyTorch eager decode: {results['onnx_vs_torch_decode_speedup']:.2f}x "
            "faster (target >= 1.5x)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
