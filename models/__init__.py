"""Architecture adapters: where each HF family keeps its token embedding, tied head and positions.

Importing this package registers every adapter (each module in this folder, found
automatically); `adapter_for(model)` picks one by class name.
"""

import importlib as _importlib
import pkgutil as _pkgutil

from tensorgpt.models.base import DecoderShape, ModelAdapter, adapter_for, supported_architectures

for _info in _pkgutil.iter_modules(__path__):
    if _info.name != "base":
        _importlib.import_module(f"{__name__}.{_info.name}")  # registers the adapters

__all__ = ["DecoderShape", "ModelAdapter", "adapter_for", "supported_architectures"]
