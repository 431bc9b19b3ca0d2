"""`tensorgpt compare DIR...`: exported folders side by side (tensorgpt/compare.py).

Only argparse at import time, like runtime_demo/commands.py: onnxruntime is imported when the
command runs, matplotlib only for --plot.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tensorgpt.common.command import Command
from tensorgpt.runtime_demo.commands import THREADS_HELP


def add_measurement_arguments(
    p: argparse.ArgumentParser, text_required: bool = False, several_texts: bool = False
) -> None:
    """Text, speed and output options shared by `compare` and `sweep`."""
    if several_texts:
        p.add_argument(
            "--text",
            metavar="FILE",
            nargs="+",
            action="extend",
            required=text_required,
            help="UTF-8 texts for perplexity, one per domain: every domain is reported and the "
            "worst one (without it: sizes and speed only)",
        )
    else:
        p.add_argument(
            "--text",
            metavar="FILE",
            required=text_required,
            help="UTF-8 text for perplexity (without it: sizes and speed only)",
        )
    p.add_argument("--max-tokens", type=int, help="score only the text's first N tokens")
    p.add_argument("--window", type=int, help="tokens per perplexity window (default 512)")
    p.add_argument(
        "--stride", type=int, help="start a window every STRIDE tokens (default: window)"
    )
    p.add_argument("--threads", type=int, help=THREADS_HELP)
    p.add_argument("--no-speed", action="store_true", help="skip the decode timing")
    p.add_argument(
        "--decode-tokens", type=int, default=32, help="timed decode steps per repeat (default 32)"
    )
    p.add_argument("--no-cache", action="store_true", help="re-measure perplexity")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    p.add_argument("--markdown", metavar="FILE", help="also write the table as Markdown")
    p.add_argument("--plot", metavar="FILE.png", help="also plot file size against perplexity")


def _add_arguments(p: argparse.ArgumentParser) -> None:
    from tensorgpt.runtime_demo.commands import add_integrity_option

    p.add_argument("dirs", nargs="+", metavar="DIR", help="folders written by `tensorgpt export`")
    add_measurement_arguments(p, several_texts=True)
    add_integrity_option(p)


def options_from_args(args: argparse.Namespace):
    """(TextOptions | None, SpeedOptions | None) from the shared options."""
    from tensorgpt.compare import SpeedOptions, TextOptions
    from tensorgpt.runtime_demo.machine import resolve_threads

    if args.text is None and any(
        v is not None for v in (args.max_tokens, args.window, args.stride)
    ):
        raise ValueError("--max-tokens, --window and --stride need --text")
    if args.plot and args.text is None:
        raise ValueError("--plot draws perplexity against size: it needs --text")
    if args.decode_tokens < 1:
        raise ValueError(f"--decode-tokens must be >= 1, got {args.decode_tokens}")
    text = None
    if isinstance(args.text, list):  # compare: one TextOptions per domain
        text = [TextOptions(t, args.max_tokens, args.window, args.stride) for t in args.text]
    elif args.text is not None:
        text = TextOptions(args.text, args.max_tokens, args.window, args.stride)
    # Decided now, before our own work loads the CPU; said with the timing (write_outputs).
    threads = resolve_threads(args.threads)
    speed = (
        None if args.no_speed else SpeedOptions(threads=threads, decode_tokens=args.decode_tokens)
    )
    return text, speed


def log(message: str) -> None:
    print(f"[compare] {message}", file=sys.stderr, flush=True)


def write_outputs(report: dict, args: argparse.Namespace, title: str | None = None) -> None:
    """Terminal table (or JSON) on stdout, and the --markdown / --plot files."""
    from tensorgpt.compare_legend import conclusion, explanation
    from tensorgpt.compare_table import domain_lines, format_table, to_markdown
    from tensorgpt.runtime_demo.machine import threads_note

    if args.markdown:
        markdown = to_markdown(report, title) + f"{conclusion(report)}\n"
        Path(args.markdown).write_text(markdown, encoding="utf-8")
    if args.plot:
        from .plot import plot_size_vs_perplexity

        plot_size_vs_perplexity(report, args.plot, title)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_table(report))
        for line in domain_lines(report):
            print(line)
        print("\n".join(explanation(report)))
        if report["speed"] is not None and (note := threads_note(args.threads)):
            print(note)
    if args.plot:
        log(f"plot of file size against perplexity: {Path(args.plot).resolve()}")


def _run(args: argparse.Namespace) -> int:
    from tensorgpt.compare import compare

    text, speed = options_from_args(args)
    report = compare(
        args.dirs,
        text,
        speed,
        use_cache=not args.no_cache,
        log=log,
        check_integrity=not args.skip_integrity_check,
    )
    write_outputs(report, args)
    return 0


COMMANDS = [
    Command(
        "compare",
        "exported folders side by side: bytes, table errors, perplexity, decode ms/token",
        _add_arguments,
        _run,
    ),
]
