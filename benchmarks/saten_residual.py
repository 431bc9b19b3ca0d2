"""Speed of one Saten layer (export/linears/saten.py SatenLinear) against the dense nn.Linear
in the same run: the TT-matrix chain alone (`tt-only`) and with the row entries applied per
call (`tt+rows`: Gather, Mul, ReduceSum).

One SmolLM2-135M gate_proj shape (576 -> 1536) at a budget like --linear-ratio 0.9 (cores at
rank 256 plus 96 entries per row; the values are random: speed depends on shapes only). Each variant
is exported by torch.onnx (as the export traces a body) and timed by onnxruntime with 1 thread,
interleaved rounds, best round per variant, for one token (decode) and 128 (prefill); the load
average is printed with every round.

    python benchmarks/saten_residual.py [--rounds 5] [--rank 256] [--per-row 96]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from tensorgpt.export.linears.saten_layer import SatenLinear
from tensorgpt.tt_ops.tt_linear import saten_layer

OUT, IN = 1536, 576


def _export(module: nn.Module, x: torch.Tensor, path: Path) -> ort.InferenceSession:
    torch.onnx.export(module, (x,), str(path), dynamo=True, optimize=True, verbose=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    started = time.perf_counter()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    stored = sum(f.stat().st_size for f in path.parent.glob(path.name + "*"))  # + .data
    print(
        f"  {path.stem}: file {stored / 1e6:.2f} MB, session {time.perf_counter() - started:.2f} s",
        flush=True,
    )
    return session


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--rank", type=int, default=256)
    p.add_argument("--per-row", type=int, default=96)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    w = rng.standard_normal((OUT, IN)).astype(np.float32)
    layer = saten_layer(w, np.ones(IN), args.rank, per_row=args.per_row)
    tt_only = saten_layer(w, np.ones(IN), args.rank, per_row=0)
    dense = nn.Linear(IN, OUT, bias=False)
    dense.weight.data = torch.from_numpy(w)
    modules = {
        "dense": dense,
        "tt-only": SatenLinear(tt_only, None),
        "tt+rows": SatenLinear(layer, None),
    }
    params = layer.num_params()
    print(
        f"shape {OUT}x{IN}, rank {args.rank}, {args.per_row} entries per row: {params} parameters "
        f"({params / w.size:.3f} of dense)"
    )
    with tempfile.TemporaryDirectory(prefix="saten-residual-") as tmp:
        for n, reps in ((1, 300), (128, 20)):
            x = torch.from_numpy(rng.standard_normal((1, n, IN)).astype(np.float32))
            print(f"\n{n} token(s) per call:")
            sessions = {
                name: _export(m.eval(), x, Path(tmp) / f"{name}-{n}.onnx")
                for name, m in modules.items()
            }
            feeds = {name: {s.get_inputs()[0].name: x.numpy()} for name, s in sessions.items()}
            got = sessions["tt+rows"].run(None, feeds["tt+rows"])[0]
            expect = x.numpy() @ layer.dense().T
            err = np.abs(got - expect).max() / np.abs(expect).max()
            print(f"  tt+rows against its own dense weight: max rel error {err:.2g}")
            best = {name: float("inf") for name in sessions}
            for r in range(args.rounds):
                for name, s in sessions.items():
                    started = time.perf_counter()
                    for _ in range(reps):
                        s.run(None, feeds[name])
                    best[name] = min(best[name], (time.perf_counter() - started) / reps)
                print(f"  round {r + 1}: load average {os.getloadavg()[0]:.2f}", flush=True)
            for name, t in best.items():
                print(f"  {name:8s} {t * 1e6:9.1f} us/call  x{t / best['dense']:.2f} of dense")
    print(f"load average at the end: {'/'.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
