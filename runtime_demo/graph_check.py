"""The manifest's numbers against the graph they describe, before anything is sized by them.

Graph inputs and outputs (docs/architecture.md): input_ids, attention_mask, position_ids and
one past key/value per layer in; logits and one present key/value per layer out. The export
also stores its config in model.onnx's metadata (`tensorgpt.config`), which carries the facts
the IO cannot show (the context length, the hidden size).
"""

from __future__ import annotations

import json
from pathlib import Path

import onnxruntime as ort

from tensorgpt.common.contract import (
    ATTENTION_MASK,
    INPUT_IDS,
    LOGITS,
    MANIFEST_FILE,
    POSITION_IDS,
    ModelConfig,
    past_name,
    past_names,
    present_names,
)

_INT64 = "tensor(int64)"
_FLOAT = "tensor(float)"
# Config facts the graph's metadata records and the runtime sizes arrays or loops by.
_SIZES = (
    "vocab_size",
    "hidden_size",
    "num_layers",
    "num_kv_heads",
    "head_dim",
    "max_position_embeddings",
)


def _check_metadata(session: ort.InferenceSession, config: ModelConfig, path: Path) -> None:
    """model.onnx's own `tensorgpt.config` (written by the export) against the manifest."""
    text = session.get_modelmeta().custom_metadata_map.get("tensorgpt.config")
    if text is None:
        return  # a graph built by hand (tests' toy folders): the IO checks still apply
    try:
        recorded = json.loads(text)
    except ValueError:
        raise ValueError(f"{path}: metadata tensorgpt.config is not JSON") from None
    if not isinstance(recorded, dict):
        raise ValueError(f"{path}: metadata tensorgpt.config is not an object")
    for key in _SIZES:
        if key in recorded and recorded[key] != getattr(config, key):
            raise ValueError(
                f"{path.parent / MANIFEST_FILE}: config.{key} {getattr(config, key)} does not "
                f"match the graph's ({recorded[key]}, in {path.name}'s metadata)"
            )


def check_against_graph(session: ort.InferenceSession, config: ModelConfig, path: Path) -> None:
    """Compare the graph's inputs/outputs (and its own record of the config, if it has one)
    with what the manifest says they must be; ValueError on the first difference.

    The layer count is compared as a count first, so a hostile num_layers (1e8) is refused
    before any list of that length is built.
    """
    n_inputs = len(session.get_inputs())
    if 2 * config.num_layers > n_inputs:
        raise ValueError(
            f"{path} inputs do not match the manifest: num_layers {config.num_layers} needs "
            f"{2 * config.num_layers} past key/value inputs, the graph has {n_inputs} inputs"
        )
    _check_metadata(session, config, path)
    inputs = {arg.name: arg for arg in session.get_inputs()}
    outputs = {arg.name: arg for arg in session.get_outputs()}
    want_inputs = {INPUT_IDS: _INT64, ATTENTION_MASK: _INT64, POSITION_IDS: _INT64}
    want_inputs |= dict.fromkeys(past_names(config.num_layers), _FLOAT)
    want_outputs = {LOGITS: _FLOAT} | dict.fromkeys(present_names(config.num_layers), _FLOAT)
    for kind, have, want in (("inputs", inputs, want_inputs), ("outputs", outputs, want_outputs)):
        missing = sorted(set(want) - set(have))
        extra = sorted(set(have) - set(want))
        if missing or extra:
            detail = "; ".join(
                part
                for part in (
                    f"missing {', '.join(missing[:4])}" if missing else "",
                    f"unexpected {', '.join(extra[:4])}" if extra else "",
                )
                if part
            )
            raise ValueError(
                f"{path} {kind} do not match the manifest ({config.num_layers} layers): {detail}"
            )
        for name, dtype in want.items():
            if have[name].type != dtype:
                raise ValueError(f"{path}: {name} is {have[name].type}, expected {dtype}")
    # Fixed dimensions, where the graph states them (dynamic ones are strings or None).
    kv_shape = inputs[past_name(0, "key")].shape
    expected = {1: config.num_kv_heads, 3: config.head_dim}
    for axis, value in expected.items():
        if len(kv_shape) == 4 and isinstance(kv_shape[axis], int) and kv_shape[axis] != value:
            raise ValueError(
                f"{path}: past key shape {kv_shape} does not match the manifest "
                f"(num_kv_heads {config.num_kv_heads}, head_dim {config.head_dim})"
            )
    logits_shape = outputs[LOGITS].shape
    if (
        len(logits_shape) == 3
        and isinstance(logits_shape[2], int)
        and logits_shape[2] != config.vocab_size
    ):
        raise ValueError(
            f"{path}: logits have {logits_shape[2]} entries, manifest vocab_size is "
            f"{config.vocab_size}"
        )
