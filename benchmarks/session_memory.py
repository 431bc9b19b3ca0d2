"""Where an exported folder's session memory goes: RSS split into anonymous and file-backed
pages, before and after the load and after a short generation, per onnxruntime session option.

    python benchmarks/session_memory.py FOLDER[,FOLDER2...] [--rounds N] [--variant V ...]

Variants (combine with +): default, noprepack (`session.disable_prepacking`), initalloc
(`session.use_device_allocator_for_initializers`), noarena (`enable_cpu_mem_arena` off),
whole (model.onnx alone instead of the split decode.onnx + body.onnx), keeppages (the runtime's
`release_file_pages` skipped: the mapped file pages stay as onnxruntime left them). One fresh process per
(folder, variant), folders and variants interleaved round by round; each line is one JSON
record with the load average. MiB throughout; numbers, not assertions (docs/device.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

PROMPT, STEPS = 128, 16


def _status() -> dict[str, float]:
    """VmRSS, VmHWM, RssAnon, RssFile of this process, MiB."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, value = line.split(":", 1)
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) / 1024
    return out


def _worker(folder: str, variant: str) -> dict:
    import numpy as np

    from tensorgpt.common import ort_load
    from tensorgpt.runtime_demo import session

    base = ort_load.session_options
    parts = set(variant.split("+"))

    def options(threads):
        o = base(threads)
        if "noprepack" in parts:
            o.add_session_config_entry("session.disable_prepacking", "1")
        if "initalloc" in parts:
            o.add_session_config_entry("session.use_device_allocator_for_initializers", "1")
        if "noarena" in parts:
            o.enable_cpu_mem_arena = False
        return o

    session.session_options = options
    if "keeppages" in parts:
        session.release_file_pages = lambda folder: 0
    before = _status()
    model = session.ExportedModel(folder, threads=1, split="whole" not in parts)
    after = _status()
    ids = (np.arange(1, PROMPT + 1, dtype=np.int64) % model.vocab_size)[None]
    logits, past = model.forward(
        ids, np.ones_like(ids), np.arange(PROMPT)[None], model.empty_past(1)
    )
    for i in range(STEPS):
        token = np.array([[int(logits[0, -1].argmax())]])
        mask = np.ones((1, PROMPT + 1 + i), np.int64)
        logits, past = model.forward(token, mask, np.array([[PROMPT + i]]), past)
    run = _status()
    return {
        "folder": folder,
        "variant": variant,
        "load_mode": model.load_mode,
        "rss_before": round(before["VmRSS"], 1),
        "rss_after_load": round(after["VmRSS"], 1),
        "anon_added": round(after["RssAnon"] - before["RssAnon"], 1),
        "file_added": round(after["RssFile"] - before["RssFile"], 1),
        "load_peak": round(after["VmHWM"], 1),
        "rss_after_steps": round(run["VmRSS"], 1),
        "peak": round(run["VmHWM"], 1),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", help="export folder(s), comma-separated")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--variant", nargs="+", default=["default"])
    p.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(*args.worker)), flush=True)
        return 0
    for _ in range(args.rounds):
        for folder in args.folders.split(","):
            for variant in args.variant:
                subprocess.run(
                    [sys.executable, __file__, args.folders, "--worker", folder, variant],
                    check=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
