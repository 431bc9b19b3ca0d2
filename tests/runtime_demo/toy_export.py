"""A toy exported folder built with onnx.helper in milliseconds: the contract's inputs and outputs
around a trivial network (no attention). For plumbing and bad-input tests, which need a folder
that loads but not a real language model; quality tests use the exporter's tiny models.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer, models, pre_tokenizers

from tensorgpt.common.integrity import record_files

WORDS = ["<pad>", "<eos>", "the", "cat", "sat", "on", "mat", "a", "dog", "ran"]


def toy_config(vocab: int = 32, layers: int = 2, heads: int = 2, head_dim: int = 4) -> dict:
    return {
        "vocab_size": vocab,
        "hidden_size": heads * head_dim,
        "num_layers": layers,
        "num_kv_heads": heads,
        "head_dim": head_dim,
        "max_position_embeddings": 32,
        "bos_token_id": None,
        "eos_token_id": 1,
        "pad_token_id": 0,
    }


def toy_graph(config: dict, seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    vocab, hidden = config["vocab_size"], config["hidden_size"]
    heads, head_dim = config["num_kv_heads"], config["head_dim"]

    def init(name: str, array: np.ndarray) -> onnx.TensorProto:
        return numpy_helper.from_array(array, name)

    inits = [
        init("E", rng.standard_normal((vocab, hidden)).astype(np.float32)),
        init(
            "P", rng.standard_normal((config["max_position_embeddings"], hidden)).astype(np.float32)
        ),
        init("W", rng.standard_normal((hidden, vocab)).astype(np.float32)),
        init("kv_shape", np.array([0, 0, heads, head_dim], dtype=np.int64)),
    ]
    nodes = [
        helper.make_node("Gather", ["E", "input_ids"], ["tok"]),
        helper.make_node("Gather", ["P", "position_ids"], ["pos"]),
        helper.make_node("Add", ["tok", "pos"], ["x"]),
        helper.make_node("MatMul", ["x", "W"], ["logits"]),
    ]
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "total"]),
        helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch", "seq"]),
    ]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", vocab])]
    kv = ["batch", heads, "past", head_dim]
    kv_out = ["batch", heads, "total", head_dim]
    nodes.append(helper.make_node("Reshape", ["x", "kv_shape"], ["x4"]))
    nodes.append(helper.make_node("Transpose", ["x4"], ["new_kv"], perm=[0, 2, 1, 3]))
    for i in range(config["num_layers"]):
        for kind in ("key", "value"):
            past, present = f"past_key_values.{i}.{kind}", f"present.{i}.{kind}"
            inputs.append(helper.make_tensor_value_info(past, TensorProto.FLOAT, kv))
            outputs.append(helper.make_tensor_value_info(present, TensorProto.FLOAT, kv_out))
            nodes.append(helper.make_node("Concat", [past, "new_kv"], [present], axis=2))
    graph = helper.make_graph(nodes, "toy", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def toy_tokenizer(vocab: int) -> Tokenizer:
    words = WORDS + [f"w{i}" for i in range(vocab - len(WORDS))]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<pad>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.add_special_tokens(["<pad>", "<eos>"])
    return tokenizer


def toy_manifest(config: dict) -> dict:
    return {
        "format": "tensorgpt-export",
        "format_version": 1,
        "tool_version": "test",
        "source": "toy",
        "architecture": "Toy",
        "method": "none",
        "method_options": {},
        "quantize": None,
        "config": config,
        "tokenizer": {"name_or_path": "toy", "vocab_size": config["vocab_size"], "sha256": ""},
        "bytes": {},
        "ratios": {},
        "reconstruction": None,
        "verification": {},
    }


def write_toy_export(folder: Path, **config_overrides: object) -> Path:
    config = toy_config() | config_overrides
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(toy_graph(config), str(folder / "model.onnx"))
    toy_tokenizer(config["vocab_size"]).save(str(folder / "tokenizer.json"))
    manifest = toy_manifest(config)
    manifest["files"] = record_files(folder, ["model.onnx", "tokenizer.json"])
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder
