"""File helpers shared by every layer (stdlib only): hashing, sizes, atomic writes, text."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from tensorgpt.common.contract import MODEL_FILES


def stored_path(path: str) -> str:
    """A user-typed path as exports record it: `ck/gpt2`, `./ck/gpt2` and `ck//gpt2/` are the
    same folder, so they must give the same manifest and model.onnx bytes."""
    return os.path.normpath(path)


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


def write_atomic(path: str | Path, data: bytes | Callable[[Path], None]) -> None:
    """Write `data` (bytes, or a function that writes the file at the path it is given) to a
    temporary file beside `path`, then rename it over `path`: a reader (or a crash) sees the
    old file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            data(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_text(path: str | Path, option: str) -> str:
    """A whole UTF-8 text file named by command-line `option`; a missing, unreadable,
    non-UTF-8 or empty file is a ValueError naming the option."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{option}: file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read {option} {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{option} {path} is not UTF-8 text") from None
    if not text.strip():
        raise ValueError(f"{option} {path} is empty")
    return text
