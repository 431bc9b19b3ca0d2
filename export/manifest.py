"""manifest.json (a `common.contract.Manifest`): what was exported, how, how big, and whether
it verified.

The same facts (minus nested detail) go into the ONNX file's metadata_props, so a model file
that got separated from its folder still says what it is.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import onnx

from tensorgpt import __version__
from tensorgpt.common.contract import MANIFEST_FILE, MODEL_FILES, TOKENIZER_FILE, Manifest
from tensorgpt.common.files import sha256_file, write_atomic
from tensorgpt.common.integrity import record_files


def initializer_bytes(model: onnx.ModelProto) -> dict[str, int]:
    """Bytes of stored weights by part: the embedding chain, an untied head, the rest."""
    parts = {"embedding": 0, "lm_head": 0, "rest": 0}
    for tensor in model.graph.initializer:
        size = _tensor_nbytes(tensor)
        if tensor.name.startswith("embedding."):
            parts["embedding"] += size
        elif tensor.name.startswith("lm_head."):
            parts["lm_head"] += size
        else:
            parts["rest"] += size
    return parts


def _tensor_nbytes(tensor: onnx.TensorProto) -> int:
    count = 1
    for d in tensor.dims:
        count *= d
    itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    return count * itemsize


def write_manifest(path: Path, manifest: Manifest) -> None:
    write_atomic(path, manifest.to_json().encode())


def metadata_props(manifest: dict) -> dict[str, str]:
    """Flat string facts for ONNX metadata_props (nested values as compact JSON)."""
    keys = (
        "format",
        "format_version",
        "tool_version",
        "source",
        "architecture",
        "method",
        "method_options",
        "quantize",
        "runtime",
        "config",
        "ratios",
        "embedding_info",
    )
    props = {f"tensorgpt.{k}": _to_text(manifest[k]) for k in keys if k in manifest}
    if "embedding_info" in manifest:
        props["tensorgpt.embedding_info"] = _to_text(_without_run_facts(manifest["embedding_info"]))
    props["tensorgpt.initializer_bytes"] = _to_text(manifest["bytes"]["initializers"])
    verification = manifest.get("verification") or {}
    props["tensorgpt.verification"] = _to_text(
        {
            "passed": verification.get("passed"),
            "greedy_match": verification.get("greedy_match"),
            "max_abs_logit_diff": f"{verification.get('max_abs_logit_diff', float('nan')):.1e}",
        }
    )
    return props


# Facts of one run, not of its inputs: where healing kept its checkpoint and how long it took.
# manifest.json keeps them; model.onnx must not, so the same inputs give the same file bytes.
RUN_FACTS = {"healing": ("seconds", "checkpoint")}


def _without_run_facts(embedding_info: dict) -> dict:
    info = dict(embedding_info)
    for part, keys in RUN_FACTS.items():
        if isinstance(info.get(part), dict):
            info[part] = {k: v for k, v in info[part].items() if k not in keys}
    return info


def _to_text(value) -> str:
    return (
        value
        if isinstance(value, str)
        else json.dumps(value, sort_keys=True, separators=(",", ":"))
    )


def tool_version() -> str:
    return __version__


def runtime_files(manifest: Manifest) -> list[str]:
    """Every file the runtime may load from the folder: what the manifest's `files` records."""
    return [*MODEL_FILES, TOKENIZER_FILE, *(manifest.split_names() or ())]


def seal(stage: Path, manifest: Manifest, started: float) -> None:
    """The manifest's last fields, once every file is in `stage`: the tokenizer's hash, the
    runtime files' records (common/integrity.py), the export time; then write it."""
    manifest.tokenizer["sha256"] = sha256_file(stage / TOKENIZER_FILE)
    manifest.files = record_files(stage, runtime_files(manifest))
    manifest.export_seconds = round(time.perf_counter() - started, 1)
    write_manifest(stage / MANIFEST_FILE, manifest)
