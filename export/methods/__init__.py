"""Embedding methods, one class per `--method` (the style of llama.cpp's convert_hf_to_gguf.py
and of models/): each file here registers one `EmbeddingMethod` subclass, which owns its
command-line options, its validation, the codec call (tt_ops) and its ONNX graph.

Adding a method = one file in this folder (found automatically) + one test; the CLI, the
spec validation and the manifest's `method_options` derive from the registry.
"""

from __future__ import annotations

import importlib
import pkgutil

from tensorgpt.export.methods.base import EmbeddingMethod, Option

__all__ = ["EmbeddingMethod", "Option", "all_options", "get_method", "method_names", "register"]

_METHODS: dict[str, EmbeddingMethod] = {}
_DISCOVERED = False


def register(cls: type[EmbeddingMethod]) -> type[EmbeddingMethod]:
    """Class decorator: make `cls` available as `--method cls.name`."""
    if cls.name in _METHODS:
        raise ValueError(f"method {cls.name!r} is registered twice")
    _METHODS[cls.name] = cls()
    return cls


def _discover() -> None:
    for info in pkgutil.iter_modules(__path__):
        if info.name != "base":
            importlib.import_module(f"{__name__}.{info.name}")


def _registry() -> dict[str, EmbeddingMethod]:
    # a flag, not `if not _METHODS`: importing one method's module first (say
    # export.methods.tc) registers that method alone, and the others must still be found
    global _DISCOVERED
    if not _DISCOVERED:
        _discover()
        _DISCOVERED = True
    return _METHODS


def method_names() -> list[str]:
    """Registered names, in the order of `EmbeddingMethod.order` (none first, then the
    paper's formats, the baselines, the transform code)."""
    return [m.name for m in sorted(_registry().values(), key=lambda m: (m.order, m.name))]


def get_method(name: str) -> EmbeddingMethod:
    methods = _registry()
    if name not in methods:
        raise ValueError(f"--method must be one of {', '.join(method_names())}, got {name!r}")
    return methods[name]


def all_options() -> list[Option]:
    """Every option of every method, each once (the same Option may serve several methods)."""
    seen: dict[str, Option] = {}
    for name in method_names():
        for option in _registry()[name].options:
            seen.setdefault(option.name, option)
    return list(seen.values())
