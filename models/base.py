"""What every architecture adapter says, and the registry that finds one by HF class name.

Shaped like llama.cpp's convert_hf_to_gguf.py: one small class per family, registered under
the Hugging Face class names it handles, each stating only what differs. A class with no
registered adapter gets the generic one (models/generic.py) when its config and modules carry
no quirk the generic path cannot honour; the exporter never reaches into a model's attributes
itself, it asks the adapter.

Hooks (each honoured by graph assembly, export/assemble.py, and checked against PyTorch by
the export's parity check, export/verify.py):

    embedding_scale()   factor on the looked-up rows, input side only (Gemma: sqrt(hidden))
    head_quirks()       logit multiplier / divisor / soft cap applied after the LM head
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


@dataclass(frozen=True)
class HeadQuirks:
    """What happens to `hidden @ table.T` before it is returned as logits, in this order:

    logits = logits * multiply        (Cohere's logit_scale)
    logits = logits / divide          (Granite's logits_scaling)
    logits = softcap * tanh(logits / softcap)   (Gemma 2/3 final_logit_softcapping)
    """

    multiply: float | None = None
    divide: float | None = None
    softcap: float | None = None

    def active(self) -> dict[str, float]:
        return {k: v for k, v in vars(self).items() if v is not None}


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

    def check(self) -> None:
        """Raise a one-line ValueError if the model needs something this adapter lacks."""

    def embedding_scale(self) -> float | None:
        """Factor the token-embedding module applies to the rows it looks up (None: none)."""
        return None

    def head_quirks(self) -> HeadQuirks:
        return HeadQuirks()

    def hook_quirks(self) -> list[str]:
        """The quirks the graph assembly applies through this class's hooks (embedding scale,
        logit multiply / divide / soft cap), human-readable."""
        out = []
        if (scale := self.embedding_scale()) is not None:
            out.append(f"embedding scale {scale:.6g}")
        out += [f"logit {k} {v:g}" for k, v in self.head_quirks().active().items()]
        return out

    def quirks(self) -> list[str]:
        """Human-readable list of what this family does beyond a Llama-shaped decoder."""
        return self.hook_quirks()


def register(cls: type[ModelAdapter]) -> type[ModelAdapter]:
    for name in cls.hf_classes:
        _REGISTRY[name] = cls
    return cls


def supported_architectures() -> list[str]:
    return sorted(_REGISTRY)


def registered_adapter(name: str) -> type[ModelAdapter] | None:
    return _REGISTRY.get(name)


def adapter_for(model: nn.Module) -> ModelAdapter:
    """The adapter registered for `type(model).__name__`, else the generic adapter if the model
    needs no hook it lacks; otherwise a one-line ValueError naming the missing hook."""
    from tensorgpt.models.generic import GenericAdapter

    cls = _REGISTRY.get(type(model).__name__, GenericAdapter)
    adapter = cls(model)
    adapter.check()
    return adapter
