"""Integrity of an exported folder: each file the runtime loads, checked against the manifest.

The export records, in the manifest's `files` (common/contract.py), the size and sha256 of
every file the runtime reads (model.onnx, its external data if any, decode.onnx and body.onnx
of the split load, tokenizer.json). The runtime checks them before loading, so a file damaged
by a flaky copy to a board, or replaced by hand, is refused with one line naming it, instead
of running and printing wrong numbers with exit 0. It guards against accidents, not against
someone who can rewrite the manifest too (that would need a signature).

Cost: one sha256 pass over the files against a session load that reads and decodes the same
bytes; benchmarks/integrity_load.py measures the ratio on the default model.
"""

from __future__ import annotations

import os
from pathlib import Path

from tensorgpt.common.contract import FileRecord
from tensorgpt.common.files import sha256_file

SKIP_OPTION = "--skip-integrity-check"


class IntegrityError(ValueError):
    """A file does not match the manifest's record of it (the CLI makes this exit 2)."""


def inside(folder: Path, name: str) -> Path:
    """folder/name, refused if a symlink there leads out of the folder."""
    path = folder / name
    resolved = path.resolve()
    if resolved.parent != folder.resolve():
        raise ValueError(f"{path} leads outside the export folder (to {resolved})")
    return path


def record_files(folder: Path, names: list[str]) -> dict[str, dict[str, object]]:
    """The manifest's `files` for the named files of `folder` (those that exist)."""
    out: dict[str, dict[str, object]] = {}
    for name in sorted(names):
        path = folder / name
        if path.is_file():
            out[name] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
    return out


def check_file(folder: Path, name: str, record: FileRecord) -> str:
    """The file's sha256, after checking it against `record`; IntegrityError names the file.

    The size is compared first: a truncated copy is caught without reading it."""
    path = inside(folder, name)
    if not path.is_file():
        raise IntegrityError(f"{path} is missing (the manifest lists it; copy the whole folder)")
    size = os.stat(path).st_size
    if record.bytes is not None and size != record.bytes:
        raise IntegrityError(
            f"{path} has {size} bytes, the manifest records {record.bytes}: truncated or "
            f"damaged since the export (copy it again, or pass {SKIP_OPTION} to load it anyway)"
        )
    digest = sha256_file(path)
    if digest != record.sha256:
        raise IntegrityError(
            f"{path} does not match the manifest's sha256: damaged or replaced since the "
            f"export (copy it again, or pass {SKIP_OPTION} to load it anyway)"
        )
    return digest


def check_files(
    folder: Path, records: dict[str, FileRecord], names: list[str]
) -> dict[str, str | None]:
    """sha256 of each named file, checked where the manifest records it (None: not recorded)."""
    return {
        name: check_file(folder, name, records[name]) if name in records else None for name in names
    }
