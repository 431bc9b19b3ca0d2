"""Every table method on every family's tiny checkpoint, and every family from a tiny GGUF.

    python benchmarks/family_matrix.py [--families gemma3,qwen2] [--methods none,tc+q4] [--gguf]
    python benchmarks/family_matrix.py --methods "" --gguf   # the GGUF column alone

The default test suite runs every method on Gemma 3 and `tc --quantize q4` elsewhere
(tests/models/); this script runs the full family x method matrix once, each export with the
exporter's own parity check, plus the KV-cache-vs-recompute check of tests/models. With
--gguf, each family transformers reads from GGUF is also written as a tiny GGUF (Q8_0 table,
Q5_0 o_proj, Q4_0 down_proj, Q4_1 elsewhere) and exported with --quantize q4, reporting how
many matrices kept their 4-bit source grid bit for bit. Prints one JSON line per export,
with the load average (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

METHODS = ("none", "tt", "tt-matrix", "svd", "int8-rows", "int4-rows", "tc", "tc+q4", "none+q4")
GGUF_KINDS = {"embed_tokens": "Q8_0", "o_proj": "Q5_0", "down_proj": "Q4_0"}


def _spec(method: str, calib: Path):
    from tensorgpt.export.compress import CompressionSpec

    name, _, quantize = method.partition("+")
    options = {"tt": {"rank": 4}, "tt-matrix": {"rank": 16}, "svd": {"rank": 8}}
    if name == "tc":
        return CompressionSpec(method="tc", calib_text=str(calib)), quantize or "none"
    return CompressionSpec(method=name, **options.get(name, {})), quantize or "none"


def run_family(family: str, methods: list[str], work: Path, calib: Path, gguf: bool) -> None:
    from tensorgpt.export.exporter import export_model
    from tests.conftest import build_checkpoint
    from tests.gguf_builder import GGUF_ARCH, write_gguf
    from tests.models.family_checks import KV_TOLERANCE, kv_cache_diff

    ckpt = build_checkpoint(work / f"ckpt-{family}", family)
    bodies: dict = {}
    for method in methods:
        spec, quantize = _spec(method, calib)
        out = work / f"{family}-{method}"
        started = time.perf_counter()
        row = {"family": family, "method": method}
        try:
            m = export_model(
                str(ckpt), out, spec, quantize, force=True, log=lambda _: None, body_cache=bodies
            )
            v, kv = m["verification"], kv_cache_diff(out)
            row.update(
                passed=v["passed"],
                max_abs_logit_diff=v["max_abs_logit_diff"],
                kv_recompute_ok=kv <= KV_TOLERANCE,
                kv_recompute_diff=kv,
                file_kb=round(m["bytes"]["file"] / 1e3, 1),
            )
        except Exception as exc:  # noqa: BLE001  (report and go on)
            row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        row.update(seconds=round(time.perf_counter() - started, 1), load=os.getloadavg()[0])
        print(json.dumps(row), flush=True)
    if gguf and family in GGUF_ARCH:
        started = time.perf_counter()
        row = {"family": family, "method": "gguf+q4"}
        try:
            path = write_gguf(ckpt, family, work / f"{family}.gguf", GGUF_KINDS)
            m = export_model(
                str(path), work / f"{family}-gguf", quantize="q4", force=True, log=lambda _: None
            )
            q = m["weight_quantization"]
            row.update(
                passed=m["verification"]["passed"],
                architecture=m["architecture"],
                source_types=q["source_types"],
                exact_matrices=f"{q['exact_weights']}/{q['weights']}",
                # what the export logs per re-rounded tensor: its relative RMS error
                rerounded={
                    name: float(f"{t['rel_rms_error']:.3g}")
                    for name, t in q["tensors"].items()
                    if t["exact_blocks"] < 1
                },
            )
        except Exception as exc:  # noqa: BLE001
            row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        row.update(seconds=round(time.perf_counter() - started, 1), load=os.getloadavg()[0])
        print(json.dumps(row), flush=True)


def main() -> None:
    from tests.conftest import FAMILIES, _training_text

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--gguf", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="family-matrix-") as tmp:
        work = Path(tmp)
        calib = work / "calib.txt"
        calib.write_text("\n".join(_training_text()[:400]), encoding="utf-8")
        for family in args.families.split(","):
            methods = [m for m in args.methods.split(",") if m]  # --methods "": GGUF only
            run_family(family, methods, work, calib, args.gguf)


if __name__ == "__main__":
    main()
