"""The default adapter: any decoder-only HF class whose base module takes `inputs_embeds` and a
key/value cache exports without an adapter file of its own.

    shape   from the config's canonical names (hidden_size, num_attention_heads,
            num_key_value_heads, head_dim, num_hidden_layers, vocab_size,
            max_position_embeddings); configs such as GPT-2's map their own names onto these
    body    `model.base_model` (the module named by `base_model_prefix`: `model`,
            `transformer`, ...), which ends in the final norm

What the traced body already carries needs no hook: rotary or learned positions, partial
rotary (Phi), layers without rotary (SmolLM3), q/k norms (Qwen3, Gemma 3, OLMo 2), fused
qkv / gate-up projections (Phi-3; `--quantize q4` blocks each along its input axis, so a
fused matrix is just a wider one), attention soft-capping, and sliding-window layers: the
export's cache keeps every layer at past + seq (one KV contract for the runtime) and the
body's own sliding-window mask hides keys beyond the window.

What happens outside the body needs a hook (models/base.py). `check()` refuses a model
whose config or modules show such a quirk when the adapter does not declare it, naming the
hook and the file to add, instead of writing a file that would fail its parity check.
"""

from __future__ import annotations

import inspect

from tensorgpt.models.base import DecoderShape, ModelAdapter
from tensorgpt.models.cache_api import takes_cache

# config key -> the HeadQuirks field that must carry its value
HEAD_QUIRK_KEYS = {
    "logit_scale": "multiply",
    "logits_scaling": "divide",
    "final_logit_softcapping": "softcap",
}
ATTENTION_LAYER_TYPES = {"full_attention", "sliding_attention"}
EXPERT_COUNT_KEYS = ("num_experts", "num_local_experts", "n_routed_experts")


class GenericAdapter(ModelAdapter):
    """Registered for no class: `adapter_for` falls back to it. Family adapters subclass it."""

    def decoder_body(self):
        return self.model.base_model

    def shape(self) -> DecoderShape:
        c = self.config
        heads = c.num_attention_heads
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // heads
        return DecoderShape(
            vocab_size=c.vocab_size,
            hidden_size=c.hidden_size,
            num_layers=c.num_hidden_layers,
            num_kv_heads=getattr(c, "num_key_value_heads", None) or heads,
            head_dim=head_dim,
            max_position_embeddings=getattr(c, "max_position_embeddings", None) or 0,
        )

    @property
    def position_encoding(self) -> str:  # type: ignore[override]
        c = self.config
        if not _uses_rope(c):
            return "learned absolute (indexed by position_ids)"
        text = "rotary (computed from position_ids in every attention layer)"
        factor = _rope_value(c, "partial_rotary_factor")
        if factor is not None and factor < 1:
            text = f"partial rotary ({factor:g} of each head) " + text[7:]
        if no_rope := _no_rope_layers(c):
            text += f"; layers without rotary: {no_rope}"
        return text

    def quirks(self) -> list[str]:
        """The base hooks' quirks plus what the traced body carries (for manifest and docs)."""
        c = self.config
        out = super().quirks()
        window = getattr(c, "sliding_window", None)
        types = getattr(c, "layer_types", None) or []
        sliding = [i for i, t in enumerate(types) if t == "sliding_attention"]
        if window and (sliding or not types) and getattr(c, "use_sliding_window", True):
            out.append(f"sliding window {window} on layers {sliding or 'all'}")
        factor = _rope_value(c, "partial_rotary_factor")
        if factor is not None and factor < 1:
            out.append(f"partial rotary {factor:g}")
        if no_rope := _no_rope_layers(c):
            out.append(f"no rotary on layers {no_rope}")
        names = {n.rsplit(".", 1)[-1] for n, _ in self.decoder_body().named_modules()}
        if names & {"q_norm", "k_norm", "q_layernorm", "k_layernorm"}:
            out.append("q/k norms")
        if names & {"qkv_proj", "c_attn", "query_key_value", "Wqkv"}:
            out.append("fused qkv")
        if names & {"gate_up_proj"}:
            out.append("fused gate/up")
        if getattr(c, "attn_logit_softcapping", None):
            out.append(f"attention soft cap {c.attn_logit_softcapping:g}")
        return out

    def check(self) -> None:
        name = type(self.model).__name__
        c = self.config
        missing = self._missing()
        if missing is None:
            return
        what, hook = missing
        module = getattr(c, "model_type", "") or name.lower()
        raise ValueError(
            f"unsupported architecture {name}: {what}; it needs {hook}: add "
            f"tensorgpt/models/{module}.py with an adapter registered for {name} "
            "(models/gemma.py is an example)"
        )

    def _missing(self) -> tuple[str, str] | None:
        """(what the model has, which hook it needs) for the first quirk not handled."""
        import torch

        c = self.config
        if getattr(c, "is_encoder_decoder", False):
            return "it is an encoder-decoder model", "a decoder-only export (not supported)"
        if getattr(c, "num_attention_heads", None) is None:
            return (
                "its config has no num_attention_heads (a state-space or recurrent model?)",
                "a cache for non-attention layers",
            )
        per_layer = getattr(c, "per_layer_config", None)  # heterogeneous layers (Gemma 4)
        if per_layer is not None:
            shapes = sorted(
                {
                    (getattr(p, "head_dim", None), getattr(p, "num_key_value_heads", None))
                    for p in per_layer
                },
                key=str,
            )
            if len(shapes) > 1:
                return (
                    f"its layers differ in attention shape (head_dim, KV heads): {shapes}",
                    "per-layer KV cache shapes (the export's cache has one shape)",
                )
        for key in ("vocab_size", "hidden_size", "num_hidden_layers"):
            if getattr(c, key, None) is None:
                return f"its config has no {key}", "a shape() override"
        body = self.decoder_body()
        if body is self.model:
            return "it has no base module (base_model_prefix)", "a decoder_body() override"
        params = inspect.signature(body.forward).parameters
        if "inputs_embeds" not in params or not takes_cache(body):
            return (
                f"its body {type(body).__name__} takes no inputs_embeds and key/value cache",
                "a decoder_body() override",
            )
        types = set(getattr(c, "layer_types", None) or []) - ATTENTION_LAYER_TYPES
        if types:
            return f"its layers include {sorted(types)}", "a cache for non-attention layers"
        experts = next((getattr(c, k) for k in EXPERT_COUNT_KEYS if getattr(c, k, None)), None)
        if experts:
            # Qwen2/3-MoE, gpt-oss, MiniMax-M2 in transformers 5.24: their experts run through
            # torch.ops.transformers.grouped_mm_fallback, which torch.onnx cannot convert
            return (
                f"its MLPs route each token to {getattr(c, 'num_experts_per_tok', '?')} of "
                f"{experts} experts (a mixture of experts; torch.onnx has no conversion for "
                "transformers' grouped expert matmul)",
                "an expert MLP the body export can trace",
            )
        emb = self.token_embedding()
        scale = self.embedding_scale()
        if scale is None and type(emb) is not torch.nn.Embedding:
            return (
                f"its token embedding is {type(emb).__name__}, not nn.Embedding",
                "the embedding_scale hook",
            )
        if scale is not None:
            rows = torch.arange(min(4, emb.num_embeddings))
            with torch.no_grad():
                if not torch.allclose(emb(rows), emb.weight[rows] * scale, rtol=1e-6, atol=0):
                    return (
                        f"its embedding does not equal rows x {scale:g}",
                        "a correct embedding_scale",
                    )
        head = self.lm_head()
        if not isinstance(head, torch.nn.Linear):
            return f"its LM head is {type(head).__name__}, not nn.Linear", "an lm_head() override"
        declared = self.head_quirks()
        for key, field in HEAD_QUIRK_KEYS.items():
            value = getattr(c, key, None)
            if value not in (None, 1, 1.0) and getattr(declared, field) != value:
                return f"its config sets {key}={value}", f"the head_quirks hook ({field})"
        return None


def unloadable(config: dict) -> str | None:
    """The one-line refusal for a checkpoint transformers cannot build as a causal LM, from its
    raw config (config.json or a GGUF's metadata as transformers reads it), or None.

    Every model is loaded through `AutoModelForCausalLM`; without this check an encoder-decoder
    (T5) or a model type transformers has no class for (GGUF `deci`) ends in transformers'
    multi-line list of every class it knows, before any adapter is consulted.
    """
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING, CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    model_type = config.get("model_type")
    if not model_type or model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return None
    name = (config.get("architectures") or [None])[0]  # a GGUF's config names no class
    head = (
        f"unsupported architecture {name} (model type '{model_type}')"
        if name
        else f"unsupported architecture '{model_type}'"
    )
    if model_type not in CONFIG_MAPPING_NAMES:
        return (
            f"{head}: transformers {transformers.__version__} has no model class for model type "
            f"'{model_type}' (it reads such a GGUF's config, not its model); it needs a "
            "transformers causal-LM class: tensorgpt loads every model through "
            f"AutoModelForCausalLM, and an adapter file (tensorgpt/models/{model_type}.py) only "
            "adds hooks to such a class"
        )
    encoder_decoder = config.get("is_encoder_decoder")
    if encoder_decoder is None:  # a GGUF's config (t5, umt5) leaves it to the class default
        encoder_decoder = CONFIG_MAPPING[model_type]().is_encoder_decoder
    if encoder_decoder:
        return (
            f"{head}: it is an encoder-decoder model; it needs a decoder-only causal LM "
            "(tensorgpt exports one decoder with a KV cache: no adapter file can add an encoder)"
        )
    return (
        f"{head}: transformers has no causal-LM class for it (AutoModelForCausalLM); "
        "it needs a decoder-only causal LM"
    )


def _rope_value(config, key: str):
    params = getattr(config, "rope_parameters", None) or {}
    if isinstance(params, dict) and key in params:
        return params[key]
    return getattr(config, key, None)


def _uses_rope(config) -> bool:
    return bool(getattr(config, "rope_parameters", None) or getattr(config, "rope_theta", None))


def _no_rope_layers(config) -> list[int]:
    """SmolLM3's no_rope_layers: 1 = rotary, 0 = none, one flag per layer."""
    flags = getattr(config, "no_rope_layers", None) or []
    return [i for i, f in enumerate(flags) if not f]
