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


def int_list(text: str) -> tuple[int, ...]:
    """argparse type: "4,4,4,4,3", "4x4x4" or "4*4*4" -> (4, 4, 4, ...)."""
    try:
        values = tuple(
            int(v) for v in text.replace("x", ",").replace("*", ",").split(",") if v.strip()
        )
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected integers like 4,4,4,4,3, got {text!r}"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values
