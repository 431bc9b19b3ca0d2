"""Export time and peak RSS at real large-vocabulary shapes (random weights), every table method.

    python benchmarks/large_vocab.py --shape gemma3-270m [--methods none,tt,...] [--json]
    python benchmarks/large_vocab.py --shape qwen2.5-0.5b

Shapes are the real configs' (Gemma 3 270M: 262144 x 640 tied table, 18 layers; Qwen2.5-0.5B:
151936 x 896 tied, 24 layers) with random weights and the tests' small tokenizer: the ids past
the tokenizer's few hundred never occur in any calibration text, which is exactly the unseen-row
case a real 262k vocabulary meets (tc gives them its floor class; the other methods code every
row alike). Each export runs in its own process under `/usr/bin/time -v`, so its peak RSS is its
own; the load average is printed with every timing (the machine is shared). Each row has the
bytes docs/results.md's large-vocabulary tables show, from the export's manifest.json: the
table (`table_mb`), the rest of the stored weights (`body_mb`) and model.onnx (`file_mb`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

# a sibling script (benchmarks/ is on sys.path when a benchmark runs as a script)
from export_scaling import run_export as measured_export
from real_shapes import SHAPES

from tensorgpt.domain_texts import DEFAULT_WIKITEXT

ROOT = Path(__file__).resolve().parents[1]
CALIB = Path(DEFAULT_WIKITEXT) / "valid.txt"  # beside the repo, or TENSORGPT_DATA
LARGE_VOCAB = ("gemma3-270m", "qwen2.5-0.5b")
METHODS = {
    "none": [],
    "int8-rows": ["--method", "int8-rows"],
    "int4-rows": ["--method", "int4-rows"],
    "svd": ["--method", "svd"],
    "tt": ["--method", "tt"],
    "tt-matrix": ["--method", "tt-matrix"],
    "tc": ["--method", "tc", "--calib-text", str(CALIB)],
    "tc+q4": ["--method", "tc", "--calib-text", str(CALIB), "--quantize", "q4"],
    # the dense table with 4-bit transformer blocks (export_scaling.py's `q4` variant)
    "q4": ["--quantize", "q4"],
}


def build(shape: str, folder: Path) -> Path:
    sys.path.insert(0, str(ROOT))
    from tests.conftest import build_checkpoint

    family, overrides, _ = SHAPES[shape]
    return build_checkpoint(folder, family, **overrides)


def run_export(ckpt: Path, out: Path, args: list[str]) -> dict:
    """benchmarks/export_scaling.py's measured export, plus what a table method reports."""
    row = measured_export(ckpt, out, args)
    if row["exit"] == 0:
        manifest = json.loads((out / "manifest.json").read_text())
        parts = manifest["bytes"]["initializers"]
        row.update(
            table_mb=round(parts["embedding"] / 1e6, 2),
            # the body: every stored weight that is not the table (an untied head included)
            body_mb=round((parts["rest"] + parts["lm_head"]) / 1e6, 2),
            unseen_tokens=manifest["embedding_info"].get("unseen_tokens"),
        )
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=LARGE_VOCAB, default="gemma3-270m")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--work", help="folder for the checkpoint and exports (default: a temp dir)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    methods = args.methods.split(",")
    if unknown := sorted(set(methods) - set(METHODS)):
        ap.error(f"unknown methods {unknown}; choose from {','.join(METHODS)}")
    if any("--calib-text" in METHODS[m] for m in methods) and not CALIB.is_file():
        # said before the checkpoint is built, not after it by each tc export
        ap.error(
            f"{CALIB} not found: set TENSORGPT_DATA to the folder holding wikitext-2 valid.txt"
        )
    with tempfile.TemporaryDirectory(prefix="large-vocab-") as tmp:
        work = Path(args.work or tmp)
        ckpt = work / f"ckpt-{args.shape}"
        if not (ckpt / "config.json").is_file():
            build(args.shape, ckpt)
        rows = {}
        for method in methods:
            rows[method] = run_export(ckpt, work / f"out-{method}", METHODS[method])
            print(method, json.dumps(rows[method]), flush=True)
            if not args.work:
                subprocess.run(["rm", "-rf", str(work / f"out-{method}")], check=False)
    if args.json:
        print(json.dumps({"shape": args.shape, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
