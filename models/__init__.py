"""Architecture adapters: where each HF family keeps its token embedding, tied head and positions.

Importing this package registers every family adapter; `adapter_for(model)` picks one by
class name and falls back to the generic adapter (models/generic.py).
"""

from tensorgpt.models import cohere, gemma, granite  # noqa: F401  (registers the adapters)
from tensorgpt.models.base import (
    DecoderShape,
    HeadQuirks,
    ModelAdapter,
    adapter_for,
    supported_architectures,
)
from tensorgpt.models.generic import GenericAdapter

__all__ = [
    "DecoderShape",
    "GenericAdapter",
    "HeadQuirks",
    "ModelAdapter",
    "adapter_for",
    "supported_architectures",
]
