"""Architecture adapters: where each HF family keeps its token embedding, tied head and positions.

Importing this package registers every adapter; `adapter_for(model)` picks one by class name.
"""

from tensorgpt.models import gpt2, llama  # noqa: F401  (registers the adapters)
from tensorgpt.models.base import DecoderShape, ModelAdapter, adapter_for, supported_architectures

__all__ = ["DecoderShape", "ModelAdapter", "adapter_for", "supported_architectures"]
