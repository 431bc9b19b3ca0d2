"""Where a decode step goes: onnxruntime's profiler over the decode steps of one export.

    python benchmarks/profile_decode.py EXPORT_DIR [--threads 1] [--prompt 128] [--steps 32]

Loads model.onnx with profiling on, runs a random prompt (ids seeded as `tensorgpt bench`
does) and then `--steps` greedy single-token steps, and prints each op type's share of the
kernel time of the decode steps only (the prompt's forward is left out), with the load
average. The printout is what docs/device.md quotes when a speed target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--prompt", type=int, default=128)
    p.add_argument("--steps", type=int, default=32)
    args = p.parse_args(argv)

    import onnxruntime as ort

    from tensorgpt.common.contract import (
        ATTENTION_MASK,
        INPUT_IDS,
        POSITION_IDS,
        past_names,
    )
    from tensorgpt.runtime_demo.manifest import load_manifest

    _, config = load_manifest(args.folder)
    with tempfile.TemporaryDirectory(prefix="profile_decode_") as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "profile")
        session = ort.InferenceSession(
            str(args.folder / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        names = past_names(config.num_layers)
        shape = (1, config.num_kv_heads, 0, config.head_dim)
        past = {n: np.zeros(shape, np.float32) for n in names}
        ids = np.random.default_rng(0).integers(0, config.vocab_size, (1, args.prompt))
        total = 0
        for _ in range(args.steps + 1):
            seq = ids.shape[1]
            feeds = {
                INPUT_IDS: ids.astype(np.int64),
                ATTENTION_MASK: np.ones((1, total + seq), np.int64),
                POSITION_IDS: np.arange(total, total + seq, dtype=np.int64)[None, :],
                **past,
            }
            outputs = session.run(None, feeds)
            total += seq
            past = dict(zip(names, outputs[1:]))
            ids = outputs[0][:, -1:].argmax(-1)
        trace = json.loads(Path(session.end_profiling()).read_text())
    runs = [e for e in trace if e.get("cat") == "Session" and e.get("name") == "model_run"]
    first_end = runs[0]["ts"] + runs[0]["dur"]  # the prompt's run: left out
    by_op: Counter = Counter()
    for event in trace:
        kernel_event = event.get("cat") == "Node" and event["name"].endswith("_kernel_time")
        if kernel_event and event["ts"] >= first_end:
            by_op[event["args"]["op_name"]] += event["dur"]
    kernel = sum(by_op.values())
    per_step = sum(r["dur"] for r in runs[1:]) / max(len(runs) - 1, 1) / 1000
    load = "/".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"{args.folder}: {args.steps} decode steps after a {args.prompt}-token prompt, "
        f"{args.threads} thread(s), {per_step:.2f} ms per step (profiled), load avg {load}"
    )
    for op, dur in by_op.most_common():
        print(f"  {op:36s} {100 * dur / kernel:5.1f}%  {dur / 1000 / args.steps:7.3f} ms/step")
    return 0


if __name__ == "__main__":
    sys.exit(main())
