"""`tensorgpt sweep MODEL --text FILE --out DIR`: export a grid, measure it, compare it.

Writes DIR/<variant>/ per variant (tensorgpt/sweep.py), then DIR/results.json, DIR/results.md and
DIR/results.png (tensorgpt/compare.py, compare_table.py). Nothing heavy is imported at module level.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tensorgpt.common.command import Command
from tensorgpt.compare_commands import add_measurement_arguments


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="what `tensorgpt export` accepts")
    p.add_argument("--out", required=True, metavar="DIR", help="one subfolder per variant")
    p.add_argument(
        "--only",
        type=lambda s: [n.strip() for n in s.split(",") if n.strip()],
        metavar="NAMES",
        help="comma-separated variant names from the default grid (see tensorgpt/sweep.py)",
    )
    p.add_argument(
        "--sizes-only",
        action="store_true",
        help="export and report bytes only: no perplexity, no timing (e.g. random weights)",
    )
    p.add_argument("--title", help="heading of results.md and the plot (default: MODEL)")
    add_measurement_arguments(p)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _run(args: argparse.Namespace) -> int:
    from tensorgpt.compare import check_text, compare, measure_perplexity
    from tensorgpt.compare_commands import log, options_from_args
    from tensorgpt.sweep import default_grid, run_sweep, select

    if args.sizes_only:
        if args.text or args.plot:
            raise ValueError("--sizes-only measures no perplexity: drop --text and --plot")
        args.no_speed = True
    elif not args.text:
        raise ValueError("--text FILE is required (or --sizes-only)")
    text, speed = options_from_args(args)
    if text is not None:
        check_text(text.path)  # a bad --text fails now, not after an hour of exports
    variants = select(default_grid(), args.only)
    out = Path(args.out)

    def measure(folder: Path) -> None:
        threads = speed.threads if speed else None
        result = measure_perplexity(folder, text, threads, not args.no_cache, log)
        _log(f"[sweep] {folder.name}: perplexity {result['perplexity']:.4g}")

    result = run_sweep(args.model, out, variants, measure if text else None, _log)
    _log(
        f"[sweep] built {len(result.built)}, already done {len(result.skipped)}, "
        f"failed {len(result.failed)}"
    )
    if not result.folders:
        raise ValueError("no variant was exported; see the logs in " + str(out / "logs"))
    report = compare(result.folders, text, speed, use_cache=True, log=log)
    report["failed"] = result.failed
    _write_results(report, out, args)
    for name, error in result.failed.items():
        _log(f"[sweep] {name} failed: {error}")
    return 1 if result.failed else 0


def _write_results(report: dict, out: Path, args: argparse.Namespace) -> None:
    """DIR/results.{json,md,png} always; --markdown/--plot copies where the user asked."""
    from tensorgpt.compare_commands import write_outputs
    from tensorgpt.compare_table import to_markdown

    title = args.title or f"{args.model}: {len(report['rows'])} variants"
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    markdown = to_markdown(report, title) + _failures_markdown(report["failed"])
    (out / "results.md").write_text(markdown, encoding="utf-8")
    if report["text"] is not None:
        from tensorgpt.plot import plot_size_vs_perplexity

        plot_size_vs_perplexity(report, out / "results.png", title)
    if args.markdown:
        Path(args.markdown).write_text(markdown, encoding="utf-8")
    if args.plot:
        plot_size_vs_perplexity(report, args.plot, title)
    args.markdown = args.plot = None  # written above (with the failures section)
    write_outputs(report, args)


def _failures_markdown(failed: dict[str, str]) -> str:
    if not failed:
        return ""
    lines = ["Variants that failed to export (not in the table):", ""]
    lines += [f"- `{name}`: {error}" for name, error in failed.items()]
    return "\n".join(lines) + "\n"


COMMANDS = [
    Command(
        "sweep",
        "export a grid of compression variants of one model, measure and compare them",
        _add_arguments,
        _run,
    ),
]
