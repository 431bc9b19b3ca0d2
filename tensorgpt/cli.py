"""The `tensorgpt` console command.

Each package contributes its subcommands through a `commands.py` module that exposes
`COMMANDS`, a list of `Command`. Those modules import nothing heavy at import time (torch,
transformers, onnx are imported inside `run`), so `tensorgpt run ...` on a device without
torch works and starts fast.

User mistakes (a ValueError or an OSError raised while validating or writing) become one line
on stderr and exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from tensorgpt import __version__
from tensorgpt.common.command import Command

EXIT_USER_ERROR = 2

# Packages whose commands.py adds subcommands, in the order they appear in --help.
_COMMAND_MODULES = (
    "tensorgpt.tt_ops.commands",
    "tensorgpt.export.commands",
    "tensorgpt.sweep_commands",
    "tensorgpt.runtime_demo.commands",
    "tensorgpt.compare_commands",
)


def _load_commands() -> list[Command]:
    commands: list[Command] = []
    for module_name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            # A runtime-only install has no torch: its export commands cannot be offered,
            # but only a missing third-party package may be skipped, never our own modules.
            if exc.name and exc.name.split(".")[0] != "tensorgpt":
                continue
            raise
        commands.extend(getattr(module, "COMMANDS", []))
    return commands


def build_parser(commands: Sequence[Command]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tensorgpt",
        description="Compress a causal LM's token embedding, export it to ONNX, run and compare it.",
    )
    parser.add_argument("--version", action="version", version=f"tensorgpt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for command in commands:
        p = sub.add_parser(command.name, help=command.help, description=command.help)
        command.add_arguments(p)
        p.set_defaults(_run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(_load_commands())
    args = parser.parse_args(argv)
    try:
        code = args._run(args)
    except (ValueError, OSError) as exc:
        print(f"tensorgpt {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt as exc:
        detail = f" ({exc})" if str(exc) else ""
        print(f"tensorgpt {args.command}: interrupted{detail}", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
