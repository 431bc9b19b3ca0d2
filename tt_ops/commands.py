"""Subcommands contributed by this package (see tensorgpt/cli.py).

    tensorgpt ratios --dim 768 --ranks 1,2,4,8 [--json]
    tensorgpt decompose TABLE.npy|TABLE.safetensors OUT.safetensors --method tt|tt-matrix
        [--rank 4 | 2,4,4] [--factors ...] [--vocab-factors ...] [--rel-error EPS] [--json]

Nothing heavy is imported here at module level: numpy and the math modules load inside run.
"""

from __future__ import annotations

import argparse
import json

from tensorgpt.common.command import Command, parse_int_list


def _int_list(text: str, option: str) -> list[int]:
    return list(parse_int_list(text, option))


# ---------------------------------------------------------------- ratios


def _add_ratios_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dim", type=int, default=768, help="embedding width D (default 768)")
    p.add_argument(
        "--ranks", default="1,2,4,8", help="rank caps, comma-separated (default 1,2,4,8)"
    )
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")


def _run_ratios(args: argparse.Namespace) -> int:
    from .ratios import paper_ranks, paper_ratios
    from .shapes import paper_mode_sizes

    rows = paper_ratios(args.dim, _int_list(args.ranks, "--ranks"))
    if args.json:
        print(json.dumps(rows))
        return 0
    order = len(paper_mode_sizes(args.dim))
    padded = 2**order
    print(f"D = {args.dim} padded to 2^{order} = {padded} ({padded - args.dim} zeros), modes of 2")
    print(f"{'rank cap':>8}  {'params/token':>12}  {'ratio':>6}  ranks")
    for row in rows:
        ranks = ",".join(map(str, paper_ranks(args.dim, row["rank"])))
        print(f"{row['rank']:>8}  {row['params_per_token']:>12}  {row['ratio']:>6.2f}  {ranks}")
    return 0


# ---------------------------------------------------------------- decompose


def _add_decompose_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("table", help="V x D table: .npy, or .safetensors (see --tensor)")
    p.add_argument("out", help="output .safetensors file of cores")
    p.add_argument(
        "--method",
        choices=("tt", "tt-matrix"),
        default="tt",
        help="tt: one MPS per token (TensorGPT); tt-matrix: shared cores for the whole table",
    )
    p.add_argument("--rank", help="rank cap, or per-bond caps 'r1,r2,...' (tt: 4, tt-matrix: 16)")
    p.add_argument(
        "--factors",
        help="tt: mode sizes of a row, product >= D (default 2s up to a power of two); "
        "tt-matrix: dim factors, product == D",
    )
    p.add_argument("--vocab-factors", help="tt-matrix: vocab factors, product >= V")
    p.add_argument("--rel-error", type=float, help="relative error bound eps (TT-SVD, Oseledets)")
    p.add_argument(
        "--rank-mode",
        choices=("row", "table", "every-row"),
        default="row",
        help="with --rel-error, tt: per-row ranks (row), one rank set meeting eps on every row "
        "(every-row) or on the whole table (table)",
    )
    p.add_argument("--tensor", help="name of the table inside a .safetensors input")
    p.add_argument("--dtype", choices=("float32", "float16", "float64"), help="dtype of the cores")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")


def _load_table(path: str, tensor: str | None):
    import numpy as np

    if path.endswith(".npy"):
        return np.load(path, allow_pickle=False)
    if path.endswith(".safetensors"):
        from safetensors.numpy import load_file

        tensors = load_file(path)
        if tensor is None:
            if len(tensors) != 1:
                raise ValueError(f"--tensor is required: {path} holds {sorted(tensors)}")
            return next(iter(tensors.values()))
        if tensor not in tensors:
            raise ValueError(f"--tensor {tensor!r} not in {path}; it holds {sorted(tensors)}")
        return tensors[tensor]
    raise ValueError(f"table must be a .npy or .safetensors file, got {path!r}")


def _run_decompose(args: argparse.Namespace) -> int:
    import time

    from .metrics import compression_ratio, table_metrics
    from .per_token import decompose_per_token
    from .storage import load_compressed, save_compressed
    from .tt_matrix import decompose_tt_matrix

    rank = None if args.rank is None else _int_list(args.rank, "--rank")
    rank = rank[0] if rank is not None and len(rank) == 1 else rank
    factors = None if args.factors is None else _int_list(args.factors, "--factors")
    if args.method == "tt" and args.vocab_factors is not None:
        raise ValueError("--vocab-factors applies to --method tt-matrix only")
    table = _load_table(args.table, args.tensor)

    start = time.perf_counter()
    if args.method == "tt":
        obj = decompose_per_token(
            table, rank=rank, mode_sizes=factors, rel_error=args.rel_error, rank_mode=args.rank_mode
        )
    else:
        vocab = (
            None if args.vocab_factors is None else _int_list(args.vocab_factors, "--vocab-factors")
        )
        obj = decompose_tt_matrix(
            table, vocab_factors=vocab, dim_factors=factors, rank=rank, rel_error=args.rel_error
        )
    seconds = time.perf_counter() - start
    save_compressed(args.out, obj, source=args.table, dtype=args.dtype)
    obj = load_compressed(args.out)  # measure what is on disk (--dtype may round the cores)

    report = {
        "method": args.method,
        "shape": list(table.shape),
        "ranks": list(obj.ranks),
        "seconds": seconds,
        **table_metrics(table, obj.reconstruct()),
        **compression_ratio(obj),
        "out": args.out,
    }
    if args.json:
        print(json.dumps(report))
        return 0
    width = max(map(len, report))
    for key, value in report.items():
        shown = f"{value:.6g}" if isinstance(value, float) else value
        print(f"{key:<{width}}  {shown}")
    return 0


COMMANDS = [
    Command(
        name="ratios",
        help="TensorGPT's params per token and compression ratio per rank cap (no data needed)",
        add_arguments=_add_ratios_arguments,
        run=_run_ratios,
    ),
    Command(
        name="decompose",
        help="compress a V x D table into TT cores (one .safetensors file) and print the errors",
        add_arguments=_add_decompose_arguments,
        run=_run_decompose,
    ),
]
