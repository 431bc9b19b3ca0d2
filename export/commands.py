"""Subcommands contributed by this package (see tensorgpt/cli.py)."""

from __future__ import annotations

COMMANDS: list = []
