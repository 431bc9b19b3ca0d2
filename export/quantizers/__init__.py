"""Weight quantizers, one class per `--quantize` mode, registered like export/methods/: each
file here registers one `WeightQuantizer`, which hooks into the export at the step it changes
(the body graph, the weights, or the written file). Adding one = one file + one test.
"""

from __future__ import annotations

import importlib
import pkgutil

from tensorgpt.export.quantizers.base import WeightQuantizer

__all__ = ["WeightQuantizer", "get_quantizer", "quantizer_names", "register"]

_QUANTIZERS: dict[str, WeightQuantizer] = {}


def register(cls: type[WeightQuantizer]) -> type[WeightQuantizer]:
    """Class decorator: make `cls` available as `--quantize cls.name`."""
    if cls.name in _QUANTIZERS:
        raise ValueError(f"quantizer {cls.name!r} is registered twice")
    _QUANTIZERS[cls.name] = cls()
    return cls


def _registry() -> dict[str, WeightQuantizer]:
    if not _QUANTIZERS:
        for info in pkgutil.iter_modules(__path__):
            if info.name != "base":
                importlib.import_module(f"{__name__}.{info.name}")
    return _QUANTIZERS


def quantizer_names() -> list[str]:
    return [q.name for q in sorted(_registry().values(), key=lambda q: (q.order, q.name))]


def get_quantizer(name: str) -> WeightQuantizer:
    quantizers = _registry()
    if name not in quantizers:
        raise ValueError(f"--quantize must be one of {', '.join(quantizer_names())}, got {name!r}")
    return quantizers[name]
