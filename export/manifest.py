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
from tensorgpt.common.contract import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST_FILE,
    MODEL_FILES,
    TOKENIZER_FILE,
    Manifest,
    ModelConfig,
)
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


def table_size_warning(parts: dict[str, int], method: str, dense_bytes: int) -> str | None:
    """A warning line when a compressed table stores more than the dense fp32 one."""
    if method == "none" or parts["embedding"] <= dense_bytes:
        return None
    return (
        f"warning: the {method} embedding stores {parts['embedding'] / 1e6:.2f} MB, more than "
        f"the dense fp32 table ({dense_bytes / 1e6:.2f} MB): these settings do not compress it"
    )


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


def set_metadata(path: Path, props: dict[str, str]) -> None:
    """Rewrite the graph's metadata_props; weights in external data are not read or moved."""
    model = onnx.load(str(path), load_external_data=False)
    onnx.helper.set_model_props(model, props)
    onnx.save_model(model, str(path))


def build_manifest(
    loaded, adapter, spec, quantize, embedding_info, parts, report, tied
) -> Manifest:
    """The manifest of an export (in memory or --stream) before `seal` completes it:
    loaded (export/load.py LoadedModel: source, model class, tokenizer), adapter
    (models/), spec (CompressionSpec), parts (initializer_bytes), report (verification)."""
    shape = adapter.shape()
    dense_bytes = shape.vocab_size * shape.hidden_size * 4
    cfg = adapter.config
    tok = loaded.tokenizer
    eos = cfg.eos_token_id if cfg.eos_token_id is not None else tok.eos_token_id
    return Manifest(
        format=FORMAT,
        format_version=FORMAT_VERSION,
        tool_version=tool_version(),
        source=loaded.source,
        architecture=type(loaded.model).__name__,
        position_encoding=adapter.position_encoding,
        quirks=adapter.quirks(),
        method=spec.method,
        method_options=spec.options(),
        quantize=quantize,
        tied_head=tied,
        config=ModelConfig(
            vocab_size=shape.vocab_size,
            hidden_size=shape.hidden_size,
            num_layers=shape.num_layers,
            num_kv_heads=shape.num_kv_heads,
            head_dim=shape.head_dim,
            max_position_embeddings=shape.max_position_embeddings,
            bos_token_id=cfg.bos_token_id if cfg.bos_token_id is not None else tok.bos_token_id,
            eos_token_id=eos,
            pad_token_id=cfg.pad_token_id if cfg.pad_token_id is not None else tok.pad_token_id,
        ),
        tokenizer={"name_or_path": loaded.source, "vocab_size": len(tok)},
        embedding_info={k: v for k, v in embedding_info.items() if k != "reconstruction"},
        reconstruction=embedding_info["reconstruction"],
        bytes={
            "initializers": parts,
            "embedding": parts["embedding"],
            "embedding_dense_fp32": dense_bytes,
            "rest": parts["rest"] + parts["lm_head"],
        },
        ratios={"embedding_bytes": round(dense_bytes / max(parts["embedding"], 1), 4)},
        verification=report,
    )
