"""GPT-2 at its real shape (random weights): does the packed file stay packed in RAM?

    python benchmarks/gpt2_memory.py [--out DIR] [--quantize q4] [--runtime packed]

Builds GPT-2 small's shape (50257 x 768 tied table, 12 layers of 12 heads, 1024 positions)
with random weights and the tests' small tokenizer (benchmarks/export_sizes.py builds it),
exports it, then runs `tensorgpt bench --json` in a fresh process (128-token prompt, 64
decode steps, 1 thread) and prints, with the load average:

- RSS after load, and the same minus the RSS before load (what the session itself holds);
- model files on disk (model.onnx + model.onnx.data);
- the KV cache at the bench's longest context (2 x layers x heads x head_dim x tokens x 4 B);
- issue 13's target: RSS after load <= 1.3 x (model file bytes + KV cache), printed met/missed
  both for the whole process and for the session's own share (never asserted in a test).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GPT2_SMALL = dict(n_embd=768, n_layer=12)  # GPT2Config()'s, which build_gpt2_small uses
PROMPT, DECODE, TARGET = 128, 64, 1.3
MIB = 1024 * 1024  # `tensorgpt bench` reports RSS in MiB


def _load_avg() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, help="keep the checkpoint and export here")
    p.add_argument("--quantize", default="q4")
    p.add_argument("--runtime", default="packed")
    args = p.parse_args(argv)
    scratch = None if args.out else tempfile.TemporaryDirectory(prefix="gpt2_memory_")
    root = args.out or Path(scratch.name)
    tensorgpt = [sys.executable, "-m", "tensorgpt"]
    try:
        ckpt, export = root / "gpt2-random", root / f"export-{args.quantize}-{args.runtime}"
        if not (ckpt / "config.json").exists():
            sys.path.insert(0, str(ROOT))
            from benchmarks.export_sizes import build_gpt2_small

            build_gpt2_small(ckpt)
        if not (export / "manifest.json").exists():
            subprocess.run(
                [*tensorgpt, "export", str(ckpt), str(export), "--quantize", args.quantize]
                + ["--runtime", args.runtime, "--force"],
                check=True,
            )
        load = _load_avg()
        done = subprocess.run(
            [*tensorgpt, "bench", str(export), "--json", "--threads", "1"]
            + ["--prompt-tokens", str(PROMPT), "--decode-tokens", str(DECODE), "--repeats", "1"],
            check=True,
            capture_output=True,
            text=True,
        )
        got = json.loads(done.stdout.strip().splitlines()[-1])
        files = sum(
            (export / f).stat().st_size
            for f in ("model.onnx", "model.onnx.data")
            if (export / f).exists()
        )
        c = GPT2_SMALL
        kv = 2 * c["n_layer"] * c["n_embd"] * (PROMPT + DECODE) * 4
        budget = TARGET * (files + kv) / MIB
        after, before = got["rss_after_load_mb"], got["rss_before_load_mb"]
        print(
            f"GPT-2 small shape, random weights, --quantize {args.quantize} --runtime "
            f"{args.runtime} (load avg {load})"
        )
        print(
            f"model files {files / MIB:.1f} MiB, KV cache at {PROMPT + DECODE} tokens "
            f"{kv / MIB:.1f} MiB, budget {TARGET} x (files + KV) = {budget:.1f} MiB"
        )
        print(
            f"RSS before load {before} MiB, after load {after} MiB (session's own "
            f"{after - before:.1f} MiB), load peak {got.get('load_peak_rss_mb')} MiB, "
            f"decode {got.get('decode_ms_median')} ms/token"
        )
        for what, value in (("process", after), ("session's own", after - before)):
            verdict = "met" if value <= budget else "MISSED"
            print(
                f"RSS after load ({what}) <= {TARGET}x (files + KV): {verdict} "
                f"({value / (budget / TARGET):.2f}x)"
            )
    finally:
        if scratch is not None:
            scratch.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
