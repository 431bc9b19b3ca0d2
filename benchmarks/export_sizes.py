"""Export sizes, time and peak memory: GPT-2-small shape (random weights) and SmolLM2-135M.

    python benchmarks/export_sizes.py            # GPT-2-small shape: none vs tt rank 4
    python benchmarks/export_sizes.py --smollm2  # also SmolLM2-135M with every method
    python benchmarks/export_sizes.py --json

Each export runs in its own process, so peak RSS (ru_maxrss of that child) is its own.
GPT-2 weights cannot be downloaded here: the checkpoint has the real `gpt2` config
(50257 x 768, 12 layers) with random weights and a small local tokenizer, which is all the
size arithmetic needs. Targets: uncompressed within 2% of 4 x 124.4M bytes; tt rank 4 about
107 MB smaller; export <= 3 minutes and <= 4 GB peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GPT2_PARAMS = 124_439_808  # gpt2 (small), embedding tied


def build_gpt2_small(folder: Path) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    sys.path.insert(0, str(ROOT))
    from tests.conftest import build_tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    build_tokenizer(folder)
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config()).save_pretrained(str(folder))  # GPT2Config() is gpt2's shape
    return folder


def run_export(model: str, out: Path, args: list[str]) -> dict:
    cmd = [sys.executable, "-m", "tensorgpt", "export", model, str(out), "--force", "--json", *args]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        return {"model": model, "args": args, "error": proc.stderr.strip().splitlines()[-1]}
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    manifest = json.loads(proc.stdout)
    return {
        "model": model,
        "args": args,
        "file_bytes": manifest["bytes"]["file"],
        "embedding_bytes": manifest["bytes"]["embedding"],
        "embedding_ratio": manifest["ratios"]["embedding_bytes"],
        "max_abs_logit_diff": manifest["verification"]["max_abs_logit_diff"],
        "verified": manifest["verification"]["passed"],
        "export_seconds": round(seconds, 1),
        # ru_maxrss of children is the max over all children so far: exports run largest first
        "peak_rss_bytes_upper_bound": max(peak_kb, before) * 1024,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--smollm2", action="store_true", help="also export SmolLM2-135M with every method"
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--work", type=Path, help="folder for checkpoints and exports (default: a temp dir)"
    )
    opts = parser.parse_args()

    work = opts.work or Path(tempfile.mkdtemp(prefix="tensorgpt-bench-"))
    rows = []
    ckpt = build_gpt2_small(work / "gpt2-small-random")
    rows.append(run_export(str(ckpt), work / "gpt2-none", []))
    rows.append(run_export(str(ckpt), work / "gpt2-tt4", ["--method", "tt", "--rank", "4"]))
    if opts.smollm2:
        for args in (
            [],
            ["--method", "tt", "--rank", "4"],
            ["--method", "tt", "--rank", "16"],
            ["--method", "tt-matrix", "--rank", "64"],
            ["--quantize", "int8"],
            ["--method", "tt", "--rank", "4", "--quantize", "int8"],
        ):
            name = "smollm2-" + ("-".join(a.strip("-") for a in args) or "none")
            rows.append(run_export("smollm2-135m", work / name, args))

    none, tt4 = rows[0], rows[1]
    summary = {
        "gpt2_none_vs_4x_params": none.get("file_bytes", 0) / (4 * GPT2_PARAMS),
        "gpt2_tt4_saving_bytes": none.get("file_bytes", 0) - tt4.get("file_bytes", 0),
    }
    if opts.json:
        print(json.dumps({"rows": rows, **summary}, indent=2))
        return 0
    print(
        f"{'model':<28} {'args':<36} {'file MB':>9} {'emb MB':>8} {'emb x':>7} {'max diff':>9} {'s':>6} {'peak GB':>8}"
    )
    for r in rows:
        label = Path(r["model"]).name
        if "error" in r:
            print(f"{label:<28} {' '.join(r['args']):<36} ERROR {r['error']}")
            continue
        print(
            f"{label:<28} {' '.join(r['args']):<36} {r['file_bytes'] / 1e6:>9.1f} {r['embedding_bytes'] / 1e6:>8.2f} "
            f"{r['embedding_ratio']:>7.2f} {r['max_abs_logit_diff']:>9.1e} {r['export_seconds']:>6.1f} "
            f"{r['peak_rss_bytes_upper_bound'] / 1e9:>8.2f}"
        )
    print(f"GPT-2 shape, uncompressed file / (4 x 124.4M): {summary['gpt2_none_vs_4x_params']:.4f}")
    print(f"GPT-2 shape, saving of tt rank 4: {summary['gpt2_tt4_saving_bytes'] / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
