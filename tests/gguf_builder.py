"""Write a tiny GGUF file from a tiny HF checkpoint, as llama.cpp's converter would lay it out.

Metadata: transformers' own GGUF_CONFIG_MAPPING read backwards (so every key transformers
reads for the architecture is written from the HF config), the keys llama.cpp writes that
transformers drops (export/gguf_config.py reads them back), plus a byte-level BPE tokenizer
(`tokenizer.ggml.model = gpt2`: tokens, types, merges). Tensors: gguf's HF -> GGUF name map;
2-D weights in the block type `kinds` gives per name fragment (default Q4_1), norms in F32.
Weights are laid out as llama.cpp's converter does where transformers' reader undoes it
(llama-architecture q/k rows permuted for its rotary layout, Gemma norms stored as 1 + w), so
with F32 tensors transformers loads back the checkpoint's own model; with block types it loads
their dequantized values.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

GGUF_ARCH = {
    "llama": "llama",
    "qwen2": "qwen2",
    "qwen3": "qwen3",
    "gemma3": "gemma3",
    "mistral": "llama",  # as llama.cpp writes Mistral (no sliding-window key)
    "phi3": "phi3",
    "gemma2": "gemma2",
    "gpt2": "gpt2",
    "stablelm": "stablelm",
    "starcoder2": "starcoder2",
    "nemotron": "nemotron",
    "bloom": "bloom",
    "falcon": "falcon",
}


def write_gguf(
    checkpoint: Path, family: str, path: Path, kinds: dict[str, str] | None = None
) -> Path:
    import gguf
    import torch
    import transformers
    from gguf import GGMLQuantizationType, quants
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

    arch = GGUF_ARCH[family]
    kinds = kinds or {}
    model = transformers.AutoModelForCausalLM.from_pretrained(str(checkpoint), dtype=torch.float32)
    config = model.config
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(f"tiny-{family}")
    for key, attr in GGUF_CONFIG_MAPPING[arch].items():
        if attr is None:  # keys transformers reads but ignores
            continue
        value = getattr(config, attr, None)
        if attr == "n_ctx" and value is None:  # GPT-2's transformers 5 config says n_positions
            value = config.n_positions
        if attr == "rope_theta" and value is None:
            value = (getattr(config, "rope_parameters", None) or {}).get("rope_theta")
        if value is None or attr == "vocab_size":
            continue
        full = f"{arch}.{key}"
        if isinstance(value, (bool, list)):
            continue
        if isinstance(value, int):
            writer.add_uint32(full, value)
        elif isinstance(value, float):
            writer.add_float32(full, value)
    _add_llama_cpp_keys(writer, arch, config, set(GGUF_CONFIG_MAPPING[arch]))
    _add_tokenizer(writer, checkpoint / "tokenizer.json")

    gguf_arch = gguf.MODEL_ARCH[arch.upper()]
    names = gguf.get_tensor_name_map(gguf_arch, config.num_hidden_layers)
    conv1d = {n for n, m in model.named_modules() if type(m).__name__ == "Conv1D"}
    tied = config.tie_word_embeddings
    for name, tensor in model.state_dict().items():
        if tied and name == "lm_head.weight":
            continue
        target = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if target is None and name.startswith("transformer."):  # as llama.cpp's Bloom converter
            target = names.get_name(name[len("transformer.") :], try_suffixes=(".weight", ".bias"))
        if target is None:
            raise ValueError(f"no GGUF name for {name}")
        w = tensor.detach().float().numpy()
        if name.rsplit(".", 1)[0] in conv1d and w.ndim == 2:
            w = w.T  # GPT-2's Conv1D keeps (in, out); GGUF stores (out, in) like a Linear
        w = _as_llama_cpp_writes(w, target, arch, config)
        kind = next((k for frag, k in kinds.items() if frag in name), "Q4_1")
        if w.ndim == 2 and w.shape[1] % 32 == 0 and kind != "F32":
            qtype = GGMLQuantizationType[kind]
            writer.add_tensor(target, quants.quantize(w, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(target, w.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _add_llama_cpp_keys(writer, arch: str, config, written: set[str]) -> None:
    """Keys llama.cpp's converter writes that transformers' mapping does not read
    (export/gguf_config.py reads them back)."""
    head_dim = getattr(config, "head_dim", None)
    if head_dim and "attention.key_length" not in written:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    if arch == "gemma2":
        writer.add_attn_logit_softcapping(config.attn_logit_softcapping)
        writer.add_final_logit_softcapping(config.final_logit_softcapping)
    if arch in ("phi3", "nemotron"):
        rotary = config.rope_parameters.get("partial_rotary_factor", 1.0)
        head_dim = (
            getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        )
        writer.add_rope_dimension_count(int(rotary * head_dim))
    if arch == "phi3" and config.sliding_window:
        writer.add_sliding_window(config.sliding_window)


def _as_llama_cpp_writes(w: np.ndarray, target: str, arch: str, config) -> np.ndarray:
    """What llama.cpp's converter stores for this tensor (transformers' reader undoes it)."""
    if arch == "llama" and (".attn_q." in target or ".attn_k." in target):
        heads = config.num_attention_heads if ".attn_q." in target else config.num_key_value_heads
        return (
            w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:])
            .swapaxes(1, 2)
            .reshape(w.shape)
        )
    if arch == "bloom" and ".attn_qkv." in target:  # per head (q, k, v) -> all q, all k, all v
        heads = config.num_attention_heads
        return w.reshape(heads, 3, -1, *w.shape[1:]).swapaxes(0, 1).reshape(w.shape)
    if (arch.startswith("gemma") or arch == "nemotron") and "norm.weight" in target:
        return (
            w + 1
        )  # Gemma's RMSNorm, Nemotron's LayerNorm1P scale by 1 + w; llama.cpp stores the factor
    return w


def _add_tokenizer(writer, tokenizer_json: Path) -> None:
    spec = json.loads(tokenizer_json.read_text())
    vocab = spec["model"]["vocab"]
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    special = {a["content"] for a in spec.get("added_tokens", [])}
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if t in special else 1 for t in tokens])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(0)
    writer.add_pad_token_id(0)
