"""How far an fp32 ONNX file's logits sit from PyTorch's, against the logits' own scale.

    python benchmarks/parity_scale.py [--axes init,hidden,vocab,layers] [--seeds 0,1]

The export's parity check (export/verify.py) compares an fp32 file with PyTorch running the
same weights; the two differ only by floating-point summation order (onnxruntime's MLAS
kernels against PyTorch's). This script measures that difference on `--method none`, the
graph with nothing compressed, on random Qwen2-family checkpoints, moving one factor at a time
from a base shape (hidden 256, 4 layers, vocab 8192, init std 0.16): the weights' init std
(which sets the logits' magnitude), the hidden size, the vocabulary and the depth. Each row
gives the max |ONNX - PyTorch| logit difference, the reference logits' max |logit| and RMS
(all prompt and decode positions), and the difference relative to each: the parity
tolerance's rule (export/verify.py `parity_tolerance`) is read off these ratios.
Prints one JSON line per export, with the load average (the machine is shared).
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

BASE = dict(
    hidden_size=256,
    intermediate_size=512,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=8192,
    initializer_range=0.16,
    use_sliding_window=False,
    sliding_window=None,
)
AXES = {
    "init": [dict(initializer_range=s) for s in (0.02, 0.08, 0.16, 0.32, 0.64)],
    "hidden": [
        dict(hidden_size=64, intermediate_size=128),
        dict(hidden_size=256, intermediate_size=512),
        dict(hidden_size=896, intermediate_size=1792, num_attention_heads=14),
    ],
    "vocab": [dict(vocab_size=v) for v in (384, 8192, 65536, 151936)],
    "layers": [dict(num_hidden_layers=n) for n in (2, 4, 8, 16, 24)],
}


def measure(work: Path, overrides: dict, seed: int) -> dict:
    import tensorgpt.export.verify as verify
    from tensorgpt.export.exporter import export_model
    from tests.conftest import build_checkpoint

    verify.FP32_TOLERANCE = float("inf")  # measure every file: a failing one is a data point

    config = {**BASE, **overrides}
    ckpt = build_checkpoint(work / "ckpt", "qwen2", seed=seed, **config)
    started = time.perf_counter()
    manifest = export_model(str(ckpt), work / "out", force=True, log=lambda _: None)
    v = manifest["verification"]
    diff, ref_max, ref_rms = (
        v["max_abs_logit_diff"],
        v["reference_max_abs_logit"],
        v["reference_logit_rms"],
    )
    return {
        **{k: config[k] for k in ("hidden_size", "num_hidden_layers", "vocab_size")},
        "init": config["initializer_range"],
        "seed": seed,
        "max_abs_diff": float(f"{diff:.3g}"),
        "ref_max_abs": round(ref_max, 2),
        "ref_rms": round(ref_rms, 3),
        "diff_over_max": float(f"{diff / ref_max:.3g}"),
        "diff_over_rms": float(f"{diff / ref_rms:.3g}"),
        "greedy_match": v["greedy_match"],
        "seconds": round(time.perf_counter() - started, 1),
        "load": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--axes", default=",".join(AXES))
    ap.add_argument("--seeds", default="0")
    args = ap.parse_args()
    done: list[dict] = []  # the base shape sits on every axis: measured once
    for axis in args.axes.split(","):
        for overrides in AXES[axis]:
            if {**BASE, **overrides} in done:
                continue
            done.append({**BASE, **overrides})
            for seed in (int(s) for s in args.seeds.split(",")):
                with tempfile.TemporaryDirectory(prefix="parity-scale-") as tmp:
                    row = measure(Path(tmp), overrides, seed)
                print(json.dumps({"axis": axis, **row}), flush=True)


if __name__ == "__main__":
    main()
