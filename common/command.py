"""A subcommand record and the argument parsers shared by every package's commands.py.

Each package contributes subcommands through a `commands.py` exposing `COMMANDS`, a list of
`Command`; the dispatcher (tensorgpt/cli.py) collects them. This record lives at the bottom
layer so that commands.py modules never import the dispatcher above them.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]


def parse_int_list(text: str, option: str) -> tuple[int, ...]:
    """ "4,4,4,4,3", "4x4x4" or "4*4*4" -> (4, 4, 4, ...); a ValueError naming `option`."""
    try:
        values = tuple(
            int(v) for v in text.replace("x", ",").replace("*", ",").split(",") if v.strip()
        )
    except ValueError:
        raise ValueError(
            f"{option} must be comma-separated integers (like 4,4,4 or 4x4x4), got {text!r}"
        ) from None
    if not values:
        raise ValueError(f"{option} must list at least one integer, got {text!r}")
    return values


def int_list(text: str) -> tuple[int, ...]:
    """`parse_int_list` as an argparse type (argparse names the option in its message)."""
    try:
        return parse_int_list(text, "the value")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
