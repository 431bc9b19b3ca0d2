"""A model the generic path cannot honour fails with one line: what it has, the hook it needs,
and the one file to add. Models are built in memory from tiny configs (nothing exported)."""

from __future__ import annotations

import pytest
import torch
import transformers

from tensorgpt.models import GenericAdapter, adapter_for
from tensorgpt.models.generic import unloadable
from tests.conftest import FAMILIES, SHARP_INIT

# in-memory configs, smaller than tests/conftest.py's (nothing is exported here)
TINY = dict(
    vocab_size=64,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
)


def _tiny(family: str, **overrides):
    config_name, model_name, extra = FAMILIES[family]
    config = getattr(transformers, config_name)(
        **TINY, initializer_range=SHARP_INIT, **{**extra, **overrides}
    )
    torch.manual_seed(0)
    return getattr(transformers, model_name)(config)


def _one_line_error(model) -> str:
    with pytest.raises(ValueError) as info:
        adapter_for(model)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_unknown_class_with_a_scaled_embedding_names_the_hook():
    class MyGemmaForCausalLM(transformers.Gemma3ForCausalLM):
        pass  # a new class name: no registered adapter, so the generic one is tried

    model = MyGemmaForCausalLM(_tiny("gemma3").config)
    message = _one_line_error(model)
    assert "MyGemmaForCausalLM" in message
    assert "Gemma3TextScaledWordEmbedding" in message and "embedding_scale hook" in message
    assert "tensorgpt/models/gemma3_text.py" in message


def test_unknown_class_with_soft_capped_logits_names_the_hook():
    class MyLlamaForCausalLM(transformers.LlamaForCausalLM):
        pass

    model = MyLlamaForCausalLM(_tiny("llama").config)
    model.config.final_logit_softcapping = 30.0
    message = _one_line_error(model)
    assert "final_logit_softcapping=30.0" in message and "head_quirks hook (softcap)" in message
    assert "tensorgpt/models/llama.py" in message


def test_non_attention_layers_name_the_cache_they_need():
    config = transformers.Lfm2Config(**TINY, layer_types=["conv", "full_attention"])
    message = _one_line_error(transformers.Lfm2ForCausalLM(config))
    assert "['conv']" in message and "cache for non-attention layers" in message
    assert "tensorgpt/models/lfm2.py" in message


@pytest.mark.parametrize(
    "model_name, config, what",
    [
        (
            "MambaForCausalLM",
            dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, state_size=4),
            "no num_attention_heads",
        ),
        (
            "RecurrentGemmaForCausalLM",
            dict(**TINY, lru_width=32),
            "['linear_attention']",
        ),
    ],
)
def test_state_space_and_recurrent_models_name_the_cache_they_need(model_name, config, what):
    config_name = model_name.replace("ForCausalLM", "Config")
    model = getattr(transformers, model_name)(getattr(transformers, config_name)(**config))
    message = _one_line_error(model)
    assert what in message and "cache for non-attention layers" in message, message
    assert f"tensorgpt/models/{model.config.model_type}.py" in message, message


def test_registered_adapter_with_a_wrong_scale_is_refused():
    from tensorgpt.models.gemma import GemmaAdapter

    model = _tiny("gemma")

    class WrongScale(GemmaAdapter):
        def embedding_scale(self) -> float:
            return 1.0

    with pytest.raises(ValueError, match="does not equal rows x 1"):
        WrongScale(model).check()
    GemmaAdapter(model).check()  # the real hook passes


@pytest.mark.parametrize("family", ["llama", "qwen3", "phi3", "smollm3", "olmo2", "stablelm"])
def test_quirk_free_families_take_the_generic_adapter(family):
    adapter = adapter_for(_tiny(family))
    assert type(adapter) is GenericAdapter
    assert adapter.embedding_scale() is None and not adapter.head_quirks().active()


@pytest.mark.parametrize(
    "config_name, model_name",
    [
        ("Qwen2MoeConfig", "Qwen2MoeForCausalLM"),
        ("Qwen3MoeConfig", "Qwen3MoeForCausalLM"),
        ("GptOssConfig", "GptOssForCausalLM"),
        ("MiniMaxM2Config", "MiniMaxM2ForCausalLM"),
    ],
)
def test_mixture_of_experts_names_what_it_needs(config_name, model_name):
    """MoE families transformers reads from GGUF: refused before tracing (torch.onnx would
    stop deep in its converter on the grouped expert matmul)."""
    config = getattr(transformers, config_name)(
        **TINY, num_experts=4, num_local_experts=4, num_experts_per_tok=2
    )
    message = _one_line_error(getattr(transformers, model_name)(config))
    assert model_name in message and "2 of 4 experts" in message, message
    assert f"tensorgpt/models/{config.model_type}.py" in message, message


def test_layers_of_different_attention_shapes_are_named():
    """Gemma 4: full-attention layers use a wider head (global_head_dim) than sliding ones."""
    config = transformers.Gemma4TextConfig(
        **TINY, head_dim=16, global_head_dim=32, layer_types=["sliding_attention", "full_attention"]
    )
    message = _one_line_error(transformers.Gemma4ForCausalLM(config))
    assert "[(16, 1), (32, 1)]" in message and "per-layer KV cache shapes" in message, message
    assert "tensorgpt/models/gemma4_text.py" in message, message


@pytest.mark.parametrize(
    "config, words",
    [
        # T5 / UMT5, which transformers also reads from GGUF
        (
            {
                "model_type": "t5",
                "architectures": ["T5ForConditionalGeneration"],
                "is_encoder_decoder": True,
            },
            ["T5ForConditionalGeneration", "encoder-decoder", "decoder-only causal LM"],
        ),
        # as transformers reads a T5 GGUF: no is_encoder_decoder key, the class default says it
        ({"model_type": "umt5"}, ["'umt5'", "encoder-decoder"]),
        # a GGUF's `deci`: transformers reads its config keys but has no class for it
        ({"model_type": "deci"}, ["'deci'", "no model class", "tensorgpt/models/deci.py"]),
        ({"model_type": "vit", "architectures": ["ViTModel"]}, ["ViTModel", "no causal-LM class"]),
    ],
)
def test_what_transformers_cannot_build_as_a_causal_lm_is_named(config, words):
    message = unloadable(config)
    assert message is not None and "\n" not in message
    for word in words:
        assert word in message, message


def test_causal_lm_configs_pass_the_loadability_check():
    for family in ("llama", "gemma3", "gpt2", "phi3"):
        assert unloadable(_tiny(family).config.to_dict()) is None, family
