"""What every architecture adapter says, and the registry that finds one by HF class name.

Shaped like llama.cpp's convert_hf_to_gguf.py: one small class per family, registered under
the Hugging Face class names it handles, each stating only where its parts live. The exporter
never reaches into a model's attributes itself; it asks the adapter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from torch import nn

_REGISTRY: dict[str, type[ModelAdapter]] = {}


@dataclass(frozen=True)
class DecoderShape:
    """The numbers the ONNX graph's inputs and outputs are built from."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_kv_heads: int
    head_dim: int
    max_position_embeddings: int


class ModelAdapter:
    """Base adapter: a subclass names the HF classes it handles and where the parts live.

    `decoder_body()` must return the module that maps `inputs_embeds` (batch, seq, hidden)
    plus attention mask, position ids and a cache to the final, normed hidden state; the
    token embedding and the LM head are outside it, so the exporter can replace both.
    """

    hf_classes: ClassVar[tuple[str, ...]] = ()
    # How positions enter the model; informational, written to the manifest.
    position_encoding: ClassVar[str] = ""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.config = model.config

    def decoder_body(self) -> nn.Module:
        raise NotImplementedError

    def token_embedding(self) -> nn.Embedding:
        return self.model.get_input_embeddings()

    def lm_head(self) -> nn.Linear:
        return self.model.get_output_embeddings()

    def head_is_tied(self) -> bool:
        """True when the output projection is the embedding matrix itself (GPT-2, SmolLM2)."""
        head = self.lm_head()
        return head is not None and head.weight is self.token_embedding().weight

    def head_bias(self):
        return getattr(self.lm_head(), "bias", None)

    def shape(self) -> DecoderShape:
        raise NotImplementedError


def register(cls: type[ModelAdapter]) -> type[ModelAdapter]:
    for name in cls.hf_classes:
        _REGISTRY[name] = cls
    return cls


def supported_architectures() -> list[str]:
    return sorted(_REGISTRY)


def adapter_for(model: nn.Module) -> ModelAdapter:
    """The adapter registered for `type(model).__name__`, or a ValueError listing the supported ones."""
    name = type(model).__name__
    try:
        cls = _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unsupported architecture {name}; supported: {', '.join(supported_architectures())}"
        ) from None
    return cls(model)
