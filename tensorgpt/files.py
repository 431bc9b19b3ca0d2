"""File helpers shared by the export and runtime sides (stdlib only)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

# What holds a model's weights: the graph, plus its external data past protobuf's 2 GB.
MODEL_FILES = ("model.onnx", "model.onnx.data")


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_file_bytes(folder: str | Path) -> int:
    """Bytes of an exported model: model.onnx plus its external data, if any."""
    return sum(
        (Path(folder) / n).stat().st_size for n in MODEL_FILES if (Path(folder) / n).exists()
    )


def folder_bytes(folder: str | Path) -> int:
    """Bytes of everything a device needs from an export folder: its files, without hidden
    ones (the measurement cache, temporary files) and without subfolders."""
    return sum(
        p.stat().st_size
        for p in Path(folder).iterdir()
        if p.is_file() and not p.name.startswith(".")
    )


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, then rename it over `path`: a reader
    (or a crash) sees the old file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
