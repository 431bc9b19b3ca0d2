"""`tc` without --calib-text (the default) at a large vocabulary: time, memory, the head gain.

    flock /tmp/tensorgpt-bigmem.lock python benchmarks/large_vocab_tc.py --shape gemma3-270m \
        --work W [--bits 5.33 2.67] [--json]

Builds the shape's random-weight checkpoint (benchmarks/large_vocab.py `build`: the real
config, the tests' small tokenizer), loads it as the exporter does (export/load.py), then runs
the export's table step for `--method tc` with no calibration text (export/compress.py
`compress_embedding`, what `tensorgpt export` calls) in three timed stages, with the
calibration cache in W/cache (nothing reused from another run unless W is):

  1. sampling + statistics: export/generated_calibration.py `generated_stats` on the model's
     own samples (`GenerationConfig` as export/methods/tc.py derives it),
  2. head states: the LM head's inputs on those samples, for the per-row logit gain,
  3. the code: `compress_embedding` (reads 1-2 from the cache; fit, gain, reconstruction
     metrics), once per --bits.

Each stage prints wall and CPU seconds, the process's peak RSS so far and the load average
(the machine is shared). Then what depends on the vocabulary size: the classes (sizes, bits
per entry), the floor, the generation, and the gain a_v's spread (min, 1st percentile, median,
99th, max, share of rows in [0.5, 2]). Random weights: the timing and memory are the real
shape's; the gain's values only show that the fit stays finite and bounded at this size, not
what a trained model's gains are.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from large_vocab import LARGE_VOCAB, build  # noqa: E402


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


class Stage:
    """Wall and CPU time of a block, peak RSS so far and the load average, printed."""

    def __init__(self, name: str, rows: dict) -> None:
        self.name, self.rows = name, rows

    def __enter__(self):
        self.t, self.c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        row = {
            "wall_s": round(time.perf_counter() - self.t, 1),
            "cpu_s": round(time.process_time() - self.c, 1),
            "peak_rss_gb": round(peak_rss_gb(), 2),
            "load": [round(x, 1) for x in os.getloadavg()],
        }
        self.rows[self.name] = row
        print(f"# {self.name}: {json.dumps(row)}", flush=True)


def gain_spread(gain) -> dict:
    a = np.asarray(gain, dtype=np.float64)
    q = np.percentile(a, [0, 1, 50, 99, 100])
    return {
        "min": round(float(q[0]), 3),
        "p1": round(float(q[1]), 3),
        "median": round(float(q[2]), 3),
        "p99": round(float(q[3]), 3),
        "max": round(float(q[4]), 3),
        "share_0.5_to_2": round(float(((a >= 0.5) & (a <= 2)).mean()), 4),
        "finite": bool(np.isfinite(a).all()),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=LARGE_VOCAB, default="gemma3-270m")
    ap.add_argument("--work", required=True, help="folder for the checkpoint and the cache")
    ap.add_argument("--bits", type=float, nargs="+", default=[None], help="default: tc's")
    ap.add_argument(
        "--length",
        type=int,
        default=None,
        help="tokens per generated window (default: tc's own; shorter is a reduced check "
        "of the later stages: sampling time per step is printed either way)",
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    work = Path(args.work)
    os.environ["XDG_CACHE_HOME"] = str(work / "cache")  # calibration cache of this run only
    from tensorgpt.export.calibration import default_cache_dir, model_fingerprint
    from tensorgpt.export.compress import CompressionSpec, compress_embedding
    from tensorgpt.export.generated_calibration import generated_head_states, generated_stats
    from tensorgpt.export.load import load
    from tensorgpt.export.methods import tc as tc_method
    from tensorgpt.export.methods.tc import _generation
    from tensorgpt.models import adapter_for

    stages: dict = {}
    ckpt = work / f"ckpt-{args.shape}"
    if not (ckpt / "config.json").is_file():
        with Stage("build checkpoint", stages):
            build(args.shape, ckpt)
    with Stage("load", stages):
        loaded = load(str(ckpt))
        adapter, tok = adapter_for(loaded.model), loaded.tokenizer
        fingerprint = model_fingerprint(adapter, tok)
        table = adapter.token_embedding().weight.detach().float().numpy()
    config = _generation(adapter)
    if args.length:  # the export's own calibration (stage 3) must read this shorter one
        config = dataclasses.replace(config, length=args.length)
        tc_method._generation = lambda adapter: config
    with Stage("1 sampling + statistics", stages):
        gen = generated_stats(adapter, tok, config, fingerprint, default_cache_dir())
    with Stage("2 head states", stages):
        states = generated_head_states(adapter, tok, config, fingerprint, default_cache_dir())
    codes = []
    for bits in args.bits:
        with Stage(f"3 code ({bits or 'default'} bits)", stages):
            graph, info = compress_embedding(
                table, CompressionSpec(method="tc", bits_per_weight=bits), adapter, tok
            )
        code = graph.code
        codes.append(
            {
                "bits_per_weight": info["bits_per_weight"],
                "ratio": round(table.nbytes / code.nbytes(), 2),
                "class_sizes": code.meta["class_sizes"],
                "class_bits_per_weight": [round(b, 2) for b in code.meta["class_bits_per_weight"]],
                "floor_bits": code.meta["floor_bits"],
                "rel_error": info["reconstruction"]["rel_fro"],
                "gain": None if code.logit_scale is None else gain_spread(code.logit_scale),
            }
        )
        print(f"# code: {json.dumps(codes[-1])}", flush=True)
        del graph, code
    q = gen["q"][: table.shape[0]]
    out = {
        "shape": args.shape,
        "vocab": int(table.shape[0]),
        "dim": int(table.shape[1]),
        "generation": {"sequences": config.sequences, "length": config.length},
        "default_generation": dataclasses.asdict(_generation(adapter)),
        "sampled_distinct_tokens": int(np.unique(gen["ids"]).size),
        "model_mass_rows_below_1e-9": int((q / q.sum() < 1e-9).sum()),
        "head_states": list(states.shape),
        "stages": stages,
        "codes": codes,
    }
    print(json.dumps(out, indent=1 if args.json else None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
