"""Where an export's memory goes: its resident set (RSS) per phase, in this process.

    python benchmarks/export_phases.py CKPT OUT --stream --method tc --bits-per-weight 2.2 \
        --calib-text VALID --quantize q4

Runs `tensorgpt export` with the given arguments in this process, with a thread sampling
/proc/self/statm every 10 ms, and labels each sample with the stack of export functions it
falls in (the functions listed in PHASES, wrapped for the run). Prints, per phase, the RSS on
entry and exit and the highest sample inside it: which phase and which arrays set the peak
(issue 17). The sampling adds a few percent of time; RSS is the kernel's own count.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
import threading
import time

PHASES = [  # (module, attribute): what a streaming export runs, outermost first
    ("tensorgpt.export.streaming", "table_graph"),
    ("tensorgpt.export.streaming", "build_file"),
    ("tensorgpt.export.compress", "compress_embedding"),
    ("tensorgpt.export.methods.tc", "calibrate_without_model"),
    ("tensorgpt.tt_ops.transform_fit", "fit_transform_code"),
    ("tensorgpt.tt_ops.transform_fit", "class_transform"),
    ("tensorgpt.tt_ops.transform_fit", "allocate_bits"),
    ("tensorgpt.tt_ops.transform_fit", "_code_groups"),
    ("tensorgpt.tt_ops.transform_code", "TransformCodedTable.decode"),
    ("tensorgpt.tt_ops.metrics", "table_metrics"),
    ("tensorgpt.export.lazy_body", "trace_body"),
    ("tensorgpt.export.weight_blocks", "quantize_weights_q4"),
    ("tensorgpt.export.stream_write", "save_streaming"),
    ("tensorgpt.export.verify_layers", "verify_layers"),
    ("tensorgpt.export.verify", "torch_reference"),
    ("tensorgpt.export.verify", "compare_with_onnx"),
]
# names a module imported by value at import time: rebound to the wrapped function
REBIND = [("tensorgpt.export.streaming", "compress_embedding", "tensorgpt.export.compress")]

_PAGE = os.sysconf("SC_PAGE_SIZE")
_stack = ["export"]
_peaks: dict[str, int] = {}


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def _sample() -> None:
    while True:
        key = " > ".join(_stack)
        _peaks[key] = max(_peaks.get(key, 0), _rss())
        time.sleep(0.01)


def _wrap(module: str, attribute: str, started: float) -> None:
    owner = importlib.import_module(module)
    *path, name = attribute.split(".")
    for part in path:
        owner = getattr(owner, part)
    fn = getattr(owner, name)

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        _stack.append(name)
        before = _rss()
        try:
            return fn(*args, **kwargs)
        finally:
            print(
                f"[phase] {time.perf_counter() - started:7.1f} s  {' > '.join(_stack)}: "
                f"{before / 1e9:.2f} -> {_rss() / 1e9:.2f} GB",
                file=sys.stderr,
                flush=True,
            )
            _stack.pop()

    setattr(owner, name, wrapped)


def main() -> int:
    started = time.perf_counter()
    from tensorgpt.export.methods import method_names

    method_names()  # the registry finds every method before one of its modules is wrapped
    for module, attribute in PHASES:
        _wrap(module, attribute, started)
    for module, name, source in REBIND:
        setattr(
            importlib.import_module(module), name, getattr(importlib.import_module(source), name)
        )
    threading.Thread(target=_sample, daemon=True).start()
    from tensorgpt.cli import main as cli_main

    try:
        code = cli_main(["export", *sys.argv[1:]])
    finally:
        print(f"\npeak RSS per phase (GB), load average {os.getloadavg()}:", file=sys.stderr)
        for key, peak in _peaks.items():
            print(f"{peak / 1e9:6.2f}  {key}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
