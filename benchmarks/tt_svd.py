"""Batched TT-SVD vs the TensorLy loop on a GPT-2-small-shaped table.

    python benchmarks/tt_svd.py [--json] [--rows 50257] [--dim 768] [--rank 4] [--sample 2000]

A 50257 x 768 float32 table (standard normal, seed 0) is decomposed per token as in TensorGPT
(rows padded to 2^10, modes of 2, rank cap 4) by the batched path; the TensorLy reference
(`tensorly.decomposition.tensor_train` per row) runs on the first 2000 rows of the same table
in the same process, and both errors are compared on those rows.

Time: wall-clock seconds, plus the process CPU seconds (the machine may be shared: when other
jobs hold the cores, wall time grows while CPU time does not).

Memory: `peak_bytes` is the tracemalloc peak of the batched call above what was allocated
before it (numpy reports its buffers to tracemalloc), i.e. the extra memory the decomposition
needs on top of the input table, cores included; `peak_rss_bytes` is the process's maximum
resident set size (input table, Python and libraries included) and `rss_delta_bytes` that peak
minus the resident size just before the call (Linux).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import tracemalloc

import numpy as np

from tensorgpt.tt_ops.per_token import decompose_per_token


def _current_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kilobytes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=50257)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--rank", type=int, default=4)
    p.add_argument("--sample", type=int, default=2000, help="rows for the TensorLy loop")
    p.add_argument("--threads", type=int, default=None, help="worker threads (default: all cores)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    table = np.random.default_rng(0).standard_normal((args.rows, args.dim), dtype=np.float32)
    dense_bytes = table.nbytes

    decompose_per_token(table[:256], rank=args.rank)  # warm-up: imports, BLAS initialisation
    rss_before = _current_rss()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    start, cpu_start = time.perf_counter(), time.process_time()
    tt = decompose_per_token(table, rank=args.rank, threads=args.threads)
    batched_seconds = time.perf_counter() - start
    batched_cpu = time.process_time() - cpu_start
    peak_bytes = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    rss_delta = _peak_rss() - rss_before  # the peak so far is reached inside the call

    sample = table[: args.sample]
    start, cpu_start = time.perf_counter(), time.process_time()
    ref = decompose_per_token(sample, rank=args.rank, method="tensorly")
    tensorly_seconds = time.perf_counter() - start
    tensorly_cpu = time.process_time() - cpu_start

    def rel_err(recon: np.ndarray) -> float:
        return float(np.linalg.norm(recon - sample) / np.linalg.norm(sample))

    err_batched = rel_err(tt.reconstruct(np.arange(args.sample)))
    err_tensorly = rel_err(ref.reconstruct())
    per_row_batched = batched_seconds / args.rows
    per_row_tensorly = tensorly_seconds / args.sample
    result = {
        "rows": args.rows,
        "dim": args.dim,
        "rank": args.rank,
        "ranks": list(tt.ranks),
        "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
        "batched_seconds": batched_seconds,
        "batched_seconds_per_row": per_row_batched,
        "batched_cpu_seconds": batched_cpu,
        "tensorly_rows": args.sample,
        "tensorly_seconds": tensorly_seconds,
        "tensorly_seconds_per_row": per_row_tensorly,
        "tensorly_cpu_seconds": tensorly_cpu,
        "speedup": per_row_tensorly / per_row_batched,
        "rel_fro_batched_on_sample": err_batched,
        "rel_fro_tensorly_on_sample": err_tensorly,
        "error_rel_diff": abs(err_batched - err_tensorly) / err_tensorly,
        "dense_bytes": dense_bytes,
        "peak_bytes": peak_bytes,
        "peak_memory_method": "tracemalloc peak during the batched call, above the baseline",
        "peak_ratio_to_dense": peak_bytes / dense_bytes,
        "peak_rss_bytes": _peak_rss(),
        "rss_delta_bytes": rss_delta,
        "rss_delta_ratio_to_dense": rss_delta / dense_bytes,
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"table {args.rows} x {args.dim} float32, rank cap {args.rank}, ranks {tt.ranks}")
    print(
        f"batched TT-SVD, all rows:   {batched_seconds:8.3f} s  "
        f"({per_row_batched * 1e6:.1f} us/row, {batched_cpu:.3f} s CPU)"
    )
    print(
        f"TensorLy loop, {args.sample} rows: {tensorly_seconds:8.3f} s  "
        f"({per_row_tensorly * 1e6:.1f} us/row, {tensorly_cpu:.3f} s CPU)"
    )
    print(f"speedup per row:            {result['speedup']:8.1f}x")
    print(f"rel. error on the sample:   batched {err_batched:.6f}, TensorLy {err_tensorly:.6f}")
    print(
        f"peak extra memory:          {peak_bytes / 2**20:.0f} MiB = "
        f"{result['peak_ratio_to_dense']:.2f}x the dense table (tracemalloc); "
        f"RSS peak - RSS before: {rss_delta / 2**20:.0f} MiB = {result['rss_delta_ratio_to_dense']:.2f}x"
    )
    print(
        f"load average (1 min):       {result['load_average_1min']:.2f} on {os.cpu_count()} cores"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
