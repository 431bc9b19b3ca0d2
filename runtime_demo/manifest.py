"""Read and check `manifest.json` of an exported folder (docs/architecture.md).

The manifest is what tells a tensorgpt export from any other ONNX file: without it we do not
know the layer count, the KV head shapes or the EOS ids, so a folder without one is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tensorgpt.integrity import parse_records, plain_file_name

FORMAT = "tensorgpt-export"
# Versions this runtime understands; a newer exporter may add keys but not change these.
SUPPORTED_FORMAT_VERSIONS = (1,)

_REQUIRED_CONFIG_KEYS = (
    "vocab_size",
    "hidden_size",
    "num_layers",
    "num_kv_heads",
    "head_dim",
    "max_position_embeddings",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
)


@dataclass(frozen=True)
class ModelConfig:
    """The manifest's `config`, typed: the facts the runtime needs to drive the graph."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_kv_heads: int
    head_dim: int
    max_position_embeddings: int
    bos_token_id: int | None
    eos_token_ids: tuple[int, ...]
    pad_token_id: int | None


def _optional_int(value: Any, key: str, path: Path) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{path}: config.{key} must be an integer or null, got {value!r}")
    return value


def _positive_int(value: Any, key: str, path: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{path}: config.{key} must be a positive integer, got {value!r}")
    return value


def _eos_ids(value: Any, path: Path) -> tuple[int, ...]:
    # HF configs store EOS as an int, a list (Llama 3 style) or null (no stop token).
    if value is None:
        return ()
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        raise ValueError(f"{path}: config.eos_token_id must be an int or a list of ints")
    return tuple(items)


def parse_config(raw: Any, path: Path) -> ModelConfig:
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: 'config' must be an object")
    missing = [k for k in _REQUIRED_CONFIG_KEYS if k not in raw]
    if missing:
        raise ValueError(f"{path}: config lacks {', '.join(missing)}")
    config = ModelConfig(
        vocab_size=_positive_int(raw["vocab_size"], "vocab_size", path),
        hidden_size=_positive_int(raw["hidden_size"], "hidden_size", path),
        num_layers=_positive_int(raw["num_layers"], "num_layers", path),
        num_kv_heads=_positive_int(raw["num_kv_heads"], "num_kv_heads", path),
        head_dim=_positive_int(raw["head_dim"], "head_dim", path),
        max_position_embeddings=_positive_int(
            raw["max_position_embeddings"], "max_position_embeddings", path
        ),
        bos_token_id=_optional_int(raw["bos_token_id"], "bos_token_id", path),
        eos_token_ids=_eos_ids(raw["eos_token_id"], path),
        pad_token_id=_optional_int(raw["pad_token_id"], "pad_token_id", path),
    )
    # Special ids index the vocabulary (EOS stops generation, pad fills batches): in range.
    special = [config.bos_token_id, config.pad_token_id, *config.eos_token_ids]
    bad = [i for i in special if i is not None and not 0 <= i < config.vocab_size]
    if bad:
        raise ValueError(
            f"{path}: special token id {bad[0]} is out of range (vocab_size {config.vocab_size})"
        )
    return config


def split_names(manifest: dict[str, Any], path: Path) -> tuple[str, str] | None:
    """The manifest's split-load file names (decode, body), each a plain name in the folder."""
    split = manifest.get("split_load")
    if split is None:
        return None
    if not isinstance(split, dict):
        raise ValueError(f"{path}: 'split_load' must be an object or null")
    return (
        plain_file_name(split.get("decode"), "split_load.decode", path),
        plain_file_name(split.get("body"), "split_load.body", path),
    )


def check_folder(folder: str | Path) -> Path:
    """Return the folder as a Path, or raise the one-line error a user should see."""
    path = Path(folder)
    if not path.exists():
        raise FileNotFoundError(f"export folder {str(path)!r} does not exist")
    if not path.is_dir():
        raise ValueError(f"{str(path)!r} is not a folder (pass the export's OUT_DIR)")
    if not (path / "model.onnx").is_file():
        raise FileNotFoundError(f"{path} has no model.onnx: not an exported folder")
    return path


def load_manifest(folder: str | Path) -> tuple[dict[str, Any], ModelConfig]:
    """Load `folder/manifest.json`, check the keys the runtime relies on.

    Returns the raw manifest (for reports that show all of it) and its typed `config`.
    """
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        raise ValueError(
            f"{path.parent} has no manifest.json: model.onnx was not written by tensorgpt "
            "export (the runtime needs the manifest's layer and EOS facts)"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{path} is not a tensorgpt manifest (format must be {FORMAT!r})")
    version = manifest.get("format_version")
    if version not in SUPPORTED_FORMAT_VERSIONS:
        raise ValueError(
            f"{path}: format_version {version!r} is not supported by this runtime "
            f"(supports {', '.join(map(str, SUPPORTED_FORMAT_VERSIONS))})"
        )
    config = parse_config(manifest.get("config"), path)
    split_names(manifest, path)  # a hostile path is refused before any command reads it
    parse_records(manifest.get("files"), path)
    return manifest, config
