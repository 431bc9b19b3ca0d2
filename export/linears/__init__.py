"""Compressors of the transformer's own linear layers, one class per `--linears` mode,
registered like export/quantizers/: each file here registers one `LinearCompressor`
(base.py says what it states). They run on the PyTorch body before it is traced, so the
graph, the quantizers and the parity check all see the factored layers.
"""

from __future__ import annotations

import importlib
import pkgutil

from tensorgpt.export.linears.base import LinearCompressor, LinearSpec

__all__ = ["LinearCompressor", "LinearSpec", "get_linears", "linears_names", "register"]

_COMPRESSORS: dict[str, LinearCompressor] = {}
_LOADED: list[bool] = []  # non-empty once every module here was imported


def register(cls: type[LinearCompressor]) -> type[LinearCompressor]:
    """Class decorator: make `cls` available as `--linears cls.name`."""
    if cls.name in _COMPRESSORS:
        raise ValueError(f"linear compressor {cls.name!r} is registered twice")
    _COMPRESSORS[cls.name] = cls()
    return cls


def _registry() -> dict[str, LinearCompressor]:
    # a flag, not `if not _COMPRESSORS`: importing one mode's module directly (a test, a
    # benchmark) registers that mode alone, and the others must still load
    if not _LOADED:
        for info in pkgutil.iter_modules(__path__):
            if info.name not in ("base", "factored", "heal", "saten_layer"):
                importlib.import_module(f"{__name__}.{info.name}")
        _LOADED.append(True)
    return _COMPRESSORS


def linears_names() -> list[str]:
    return ["none"] + [
        c.name for c in sorted(_registry().values(), key=lambda c: (c.order, c.name))
    ]


def get_linears(name: str) -> LinearCompressor:
    compressors = _registry()
    if name not in compressors:
        raise ValueError(f"--linears must be one of {', '.join(linears_names())}, got {name!r}")
    return compressors[name]
