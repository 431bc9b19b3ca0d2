"""The exported folder's contract: the one place that spells its file names, format, graph
input/output names and manifest (docs/architecture.md, "The exported folder").

Export writes a `Manifest`; the runtime, compare and sweep read one. Stdlib only, so a
runtime-only install (no torch, no onnx) can import it.

    OUT_DIR/
      model.onnx        one decoder with KV cache (+ model.onnx.data past 2 GB)
      decode.onnx       optional, with body.onnx: the split load (export/split_load.py)
      body.onnx
      manifest.json     a `Manifest` as JSON (indent 2, sorted keys); its `files` records the
                        size and sha256 of each file above (common/integrity.py checks them)
      tokenizer.json    HF fast tokenizer (+ tokenizer_config.json etc.)
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FORMAT = "tensorgpt-export"
FORMAT_VERSION = 1
# Versions this runtime understands; a newer exporter may add keys but not change these.
SUPPORTED_FORMAT_VERSIONS = (1,)

# How the session holds the weights (`export --runtime`, docs/device.md): portable decodes
# them to fp32 at load with standard ops; packed keeps them 4/8-bit in MatMulNBits.
RUNTIMES = ("portable", "packed")
DEFAULT_RUNTIME = "portable"

MODEL_FILE = "model.onnx"
MODEL_DATA_FILE = MODEL_FILE + ".data"  # external data, past protobuf's 2 GB
# What holds a model's weights: the graph, plus its external data.
MODEL_FILES = (MODEL_FILE, MODEL_DATA_FILE)
DECODE_FILE = "decode.onnx"
BODY_FILE = "body.onnx"
MANIFEST_FILE = "manifest.json"
TOKENIZER_FILE = "tokenizer.json"

# Graph inputs and outputs (L layers, Hkv KV heads, Dh head size).
INPUT_IDS = "input_ids"  # int64 (batch, seq)
ATTENTION_MASK = "attention_mask"  # int64 (batch, past + seq)
POSITION_IDS = "position_ids"  # int64 (batch, seq)
LOGITS = "logits"  # float32 (batch, seq, vocab)
_KV = ("key", "value")


def past_name(layer: int, kind: str) -> str:
    """Graph input of layer `layer`'s cache, kind "key" or "value": float32 (batch, Hkv, past, Dh)."""
    return f"past_key_values.{layer}.{kind}"


def present_name(layer: int, kind: str) -> str:
    """Graph output of layer `layer`'s grown cache: float32 (batch, Hkv, past + seq, Dh)."""
    return f"present.{layer}.{kind}"


def past_names(num_layers: int) -> list[str]:
    """All cache inputs in graph order: layer 0 key, layer 0 value, layer 1 key, ..."""
    return [past_name(i, kind) for i in range(num_layers) for kind in _KV]


def present_names(num_layers: int) -> list[str]:
    """All cache outputs in graph order (the order of `past_names`)."""
    return [present_name(i, kind) for i in range(num_layers) for kind in _KV]


def check_folder(folder: str | Path) -> Path:
    """Return the folder as a Path, or raise the one-line error a user should see."""
    path = Path(folder)
    if not path.exists():
        raise FileNotFoundError(f"export folder {str(path)!r} does not exist")
    if not path.is_dir():
        raise ValueError(f"{str(path)!r} is not a folder (pass the export's OUT_DIR)")
    if not (path / MODEL_FILE).is_file():
        raise FileNotFoundError(f"{path} has no {MODEL_FILE}: not an exported folder")
    return path


@dataclass(frozen=True)
class ModelConfig:
    """The manifest's `config`: the facts the runtime needs to drive the graph.

    eos_token_id is kept as written (HF stores an int, a list as Llama 3 does, or null);
    `eos_token_ids` is the same as a tuple.
    """

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_kv_heads: int
    head_dim: int
    max_position_embeddings: int
    bos_token_id: int | None
    eos_token_id: int | list[int] | None
    pad_token_id: int | None

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        if self.eos_token_id is None:
            return ()
        items = self.eos_token_id if isinstance(self.eos_token_id, list) else [self.eos_token_id]
        return tuple(items)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: Any, path: str | Path = "manifest.json") -> ModelConfig:
        """Check every key and type; errors name the file and the key."""
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: 'config' must be an object")
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [k for k in names if k not in raw]
        if missing:
            raise ValueError(f"{path}: config lacks {', '.join(missing)}")
        positive = names[:6]
        values = {k: _positive_int(raw[k], k, path) for k in positive}
        for k in ("bos_token_id", "pad_token_id"):
            values[k] = _optional_int(raw[k], k, path)
        eos = raw["eos_token_id"]
        items = eos if isinstance(eos, list) else [] if eos is None else [eos]
        if not all(_is_int(v) for v in items):
            raise ValueError(f"{path}: config.eos_token_id must be an int or a list of ints")
        # Special ids index the vocabulary (EOS stops generation, pad fills batches): in range.
        special = [values["bos_token_id"], values["pad_token_id"], *items]
        bad = [i for i in special if i is not None and not 0 <= i < values["vocab_size"]]
        if bad:
            raise ValueError(
                f"{path}: special token id {bad[0]} is out of range "
                f"(vocab_size {values['vocab_size']})"
            )
        return cls(**values, eos_token_id=eos)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _optional_int(value: Any, key: str, path: str | Path) -> int | None:
    if value is not None and not _is_int(value):
        raise ValueError(f"{path}: config.{key} must be an integer or null, got {value!r}")
    return value


def _positive_int(value: Any, key: str, path: str | Path) -> int:
    if not _is_int(value) or value <= 0:
        raise ValueError(f"{path}: config.{key} must be a positive integer, got {value!r}")
    return value


def plain_file_name(value: object, what: str, path: str | Path) -> str:
    """`value` if it is a plain file name (no folder part, not `.`/`..`), else ValueError.

    Every path read from a manifest must be one: onnxruntime holds external data to the same
    rule, and the runtime's own paths (the split load's files) must not reach outside the
    folder either. `what` names the manifest key, `path` the manifest."""
    if (
        not isinstance(value, str)
        or not value
        or value in (".", "..")
        or any(c in value for c in "/\\:\0")
        or value != value.strip()
    ):
        raise ValueError(
            f"{path}: {what} must be a plain file name inside the export folder, got {value!r}"
        )
    return value


@dataclass(frozen=True)
class FileRecord:
    """A file the export wrote, as the manifest's `files` records it (common/integrity.py
    checks it); `bytes` is None for a hash an older manifest kept elsewhere."""

    sha256: str
    bytes: int | None = None


_SHA256 = re.compile(r"[0-9a-f]{64}")


def _file_records(raw: Any, path: str | Path) -> dict[str, FileRecord]:
    """Check the manifest's `files`: file name -> {bytes, sha256}."""
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: 'files' must be an object of file name -> size and sha256")
    records = {}
    for name, entry in raw.items():
        plain_file_name(name, "a name in 'files'", path)
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: files.{name} must be an object with bytes and sha256")
        size, digest = entry.get("bytes"), entry.get("sha256")
        if not _is_int(size) or size < 0:
            raise ValueError(f"{path}: files.{name}.bytes must be a size in bytes, got {size!r}")
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise ValueError(f"{path}: files.{name}.sha256 must be 64 hex digits")
        records[name] = FileRecord(sha256=digest, bytes=size)
    return records


@dataclass
class Manifest:
    """manifest.json, typed. Nested reports (bytes, verification, ...) stay plain dicts: they
    are facts for people and tables, and grow with every method; the keys the runtime relies
    on (format, version, config, split_load) are checked by `from_dict`.

    Keys written by a newer exporter that this version does not know are kept in `extra`, so
    a read-modify-write (`tensorgpt split`) does not drop them.
    """

    config: ModelConfig
    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    tool_version: str | None = None
    source: str | None = None
    architecture: str | None = None  # HF class name
    position_encoding: str | None = None
    quirks: list[str] | None = None  # what the family does beyond a Llama-shaped decoder (models/)
    method: str | None = None  # embedding method (export/methods/)
    method_options: dict[str, Any] | None = None
    quantize: str | None = None  # weight quantizer (export/quantizers/)
    runtime: str | None = None  # one of RUNTIMES; None in exports older than the option
    fusions: dict[str, Any] | None = (
        None  # packed: fused-kernel passes applied (export/packed/fusions/__init__.py)
    )
    tied_head: bool | None = None
    tokenizer: dict[str, Any] | None = None  # name_or_path, vocab_size, sha256
    embedding_info: dict[str, Any] | None = None
    reconstruction: dict[str, float] | None = None
    bytes: dict[str, Any] | None = None  # file, embedding, embedding_dense_fp32, rest, ...
    ratios: dict[str, float] | None = None
    verification: dict[str, Any] | None = None
    weight_quantization: dict[str, Any] | None = None
    linears: dict[str, Any] | None = None  # --linears: method, ratio, ranks per group
    split_load: dict[str, Any] | None = None  # decode, body, model_sha256, verification, ...
    # name -> {bytes, sha256} of every file the runtime loads (absent in older exports)
    files: dict[str, dict[str, Any]] | None = None
    export_seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        out["config"] = self.config.to_dict()
        return {**self.extra, **out}

    def to_json(self) -> str:
        """The bytes of manifest.json."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, raw: Any, path: str | Path = MANIFEST_FILE) -> Manifest:
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise ValueError(f"{path} is not a tensorgpt manifest (format must be {FORMAT!r})")
        version = raw.get("format_version")
        if version not in SUPPORTED_FORMAT_VERSIONS:
            raise ValueError(
                f"{path}: format_version {version!r} is not supported by this runtime "
                f"(supports {', '.join(map(str, SUPPORTED_FORMAT_VERSIONS))})"
            )
        known = {f.name for f in dataclasses.fields(cls)} - {"extra", "config"}
        values = {k: raw[k] for k in known if k in raw}
        split = values.get("split_load")
        if split is not None and not isinstance(split, dict):
            raise ValueError(f"{path}: split_load must be an object or null")
        extra = {k: v for k, v in raw.items() if k not in known and k != "config"}
        manifest = cls(config=ModelConfig.from_dict(raw.get("config"), path), **values, extra=extra)
        manifest.split_names(path)  # hostile paths and records are refused before any use
        manifest.file_records(path)
        return manifest

    def split_names(self, path: str | Path = MANIFEST_FILE) -> tuple[str, str] | None:
        """The split load's (decode, body) file names, each a plain name in the folder."""
        if self.split_load is None:
            return None
        return (
            plain_file_name(self.split_load.get("decode"), "split_load.decode", path),
            plain_file_name(self.split_load.get("body"), "split_load.body", path),
        )

    def file_records(self, path: str | Path = MANIFEST_FILE) -> dict[str, FileRecord]:
        """What each loaded file must be. An older manifest without `files` still holds two
        hashes: tokenizer.json's and that of the model.onnx the split files point into."""
        if self.files is not None:
            return _file_records(self.files, path)
        legacy: dict[str, FileRecord] = {}
        tokenizer_sha = (self.tokenizer or {}).get("sha256")
        if isinstance(tokenizer_sha, str) and _SHA256.fullmatch(tokenizer_sha):
            legacy[TOKENIZER_FILE] = FileRecord(tokenizer_sha)
        model_sha = (self.split_load or {}).get("model_sha256")
        if isinstance(model_sha, str) and _SHA256.fullmatch(model_sha):
            legacy[MODEL_FILE] = FileRecord(model_sha)
        return legacy

    @classmethod
    def read(cls, folder: str | Path) -> Manifest:
        """Read and check `folder/manifest.json`; a missing or broken file is a ValueError."""
        path = Path(folder) / MANIFEST_FILE
        if not path.is_file():
            raise ValueError(
                f"{path.parent} has no {MANIFEST_FILE}: {MODEL_FILE} was not written by "
                "tensorgpt export (the runtime needs the manifest's layer and EOS facts)"
            )
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path} is not valid JSON: {exc}") from None
        return cls.from_dict(raw, path)
