"""Session load time with the integrity check (the default) against without it.

Every file the runtime loads is hashed and compared with the manifest before onnxruntime
opens it (runtime_demo/integrity.py). Target: load with the check <= 1.2x the load without it
(`--skip-integrity-check`, which is the load as it was before the check: the split load then
still hashes model.onnx once to see that its split files belong to it).

One folder, one run: each load in its own subprocess (a fresh session, the files in the page
cache after the first round, as on a board that loads a model it just used), the two modes in
alternating rounds; each mode keeps its median. The load average is printed with every
timing; the ratio is only meaningful from one run on one machine load.

    tensorgpt export smollm2-135m /tmp/smollm2-q4 --quantize q4
    python benchmarks/integrity_load.py /tmp/smollm2-q4 --rounds 7
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

TARGET_RATIO = 1.2

_CHILD = """
import json, sys, time
from tensorgpt.runtime_demo.session import ExportedModel
start = time.perf_counter()
model = ExportedModel(
    sys.argv[1], threads={threads}, split={split}, check_integrity=sys.argv[2] == "check"
)
seconds = time.perf_counter() - start
print(json.dumps({{"load_s": seconds, "mode": model.load_mode, "checked": model.checked_files}}))
"""


def load_once(folder: str, check: bool, threads: int | None, split: bool = True) -> dict:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _CHILD.format(threads=threads, split=split),
            folder,
            "check" if check else "skip",
        ],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"load failed ({'check' if check else 'skip'}):\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="an exported folder (the default model: see above)")
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds (default 7)")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime threads")
    parser.add_argument(
        "--whole-load",
        action="store_true",
        help="load model.onnx whole even where split files exist (then the load without the "
        "check hashes nothing: the check's full cost)",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")

    split = not args.whole_load
    load_once(
        args.folder, True, args.threads, split
    )  # warm the page cache: every round reads it warm
    times: dict[str, list[float]] = {"check": [], "skip": []}
    for round_ in range(args.rounds):
        # alternate which mode goes first, so a drift in machine load hits both alike
        order = ("check", "skip") if round_ % 2 == 0 else ("skip", "check")
        for mode in order:
            result = load_once(args.folder, mode == "check", args.threads, split)
            times[mode].append(result["load_s"])
            load1 = os.getloadavg()[0]
            print(
                f"round {round_ + 1} {mode:5s} load {result['load_s']:.3f} s "
                f"({result['mode']} load, checked {', '.join(result['checked']) or 'nothing'}) "
                f"load average {load1:.2f}",
                file=sys.stderr,
                flush=True,
            )
    check, skip = statistics.median(times["check"]), statistics.median(times["skip"])
    summary = {
        "folder": args.folder,
        "rounds": args.rounds,
        "split_load": split,
        "load_s_check_median": round(check, 4),
        "load_s_skip_median": round(skip, 4),
        "ratio": round(check / skip, 3),
        "target_ratio": TARGET_RATIO,
        "passed": check / skip <= TARGET_RATIO,
        "load_average_1_5_15": [round(v, 2) for v in os.getloadavg()],
        "cpus": os.cpu_count(),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"load with integrity check {check:.3f} s, without {skip:.3f} s (medians of "
            f"{args.rounds}): ratio {summary['ratio']:.3f} (target <= {TARGET_RATIO}); load "
            f"average {summary['load_average_1_5_15']} on {summary['cpus']} cpus"
        )
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
