"""Which files a load reads, checked against the manifest (tensorgpt/integrity.py) first.

A load reads model.onnx (and model.onnx.data past 2 GB) or, where the export wrote them,
decode.onnx + body.onnx, which point into model.onnx's bytes; and tokenizer.json. Each is
checked against the manifest's `files` before onnxruntime sees it. Exports older than that
record have two hashes in their manifest (tokenizer.json's, and the model.onnx the split
files point into); those are checked where present.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tensorgpt.files import MODEL_FILES, TOKENIZER_FILE, sha256_file
from tensorgpt.integrity import FileRecord, IntegrityError, check_files, inside, parse_records

from .manifest import split_names


def records(manifest: dict[str, Any], source: str | Path) -> dict[str, FileRecord]:
    """The manifest's file records; for an older manifest, the hashes it does hold."""
    if "files" in manifest:
        return parse_records(manifest["files"], source)
    legacy: dict[str, FileRecord] = {}
    tokenizer_sha = (manifest.get("tokenizer") or {}).get("sha256")
    if isinstance(tokenizer_sha, str) and len(tokenizer_sha) == 64:
        legacy[TOKENIZER_FILE] = FileRecord(tokenizer_sha)
    split = manifest.get("split_load")
    if isinstance(split, dict) and isinstance(split.get("model_sha256"), str):
        legacy["model.onnx"] = FileRecord(split["model_sha256"])
    return legacy


@dataclass(frozen=True)
class LoadPlan:
    """What a session load reads: the split pair (decode, body) or None for model.onnx whole."""

    split: tuple[Path, Path] | None
    checked: tuple[str, ...]  # files whose hash matched the manifest


def plan_load(folder: Path, manifest: dict[str, Any], split: bool, check: bool) -> LoadPlan:
    """Pick whole or split load and, with `check`, verify every file it will read.

    The split pair is used only when both files are there and the manifest's `model_sha256`
    (the model.onnx they point into) is model.onnx's hash; otherwise model.onnx, which is
    self-contained, is loaded whole. Raises IntegrityError naming the first bad file.
    """
    source = folder / "manifest.json"
    names = split_names(manifest, source) if split else None
    if names is not None and not all((folder / n).is_file() for n in names):
        names = None  # a split file was not copied: model.onnx alone is complete
    for name in names or ():
        inside(folder, name)  # also with the check skipped: no symlink out of the folder
    recorded = records(manifest, source) if check else {}
    reads = [n for n in MODEL_FILES if (folder / n).exists() or n in recorded or n == "model.onnx"]
    reads += [TOKENIZER_FILE, *(names or ())]
    hashes: dict[str, str | None] = {}
    if check:
        hashes = check_files(folder, recorded, reads)
    if names is None:
        return LoadPlan(None, tuple(n for n, h in hashes.items() if h))
    model_sha = hashes.get("model.onnx") or sha256_file(folder / "model.onnx")
    if model_sha != manifest["split_load"].get("model_sha256"):
        names = None  # split files of an earlier model.onnx: they would read the wrong bytes
    pair = None if names is None else (folder / names[0], folder / names[1])
    return LoadPlan(pair, tuple(n for n, h in hashes.items() if h))


def verify_folder(folder: Path, manifest: dict[str, Any]) -> list[tuple[str, str]]:
    """(file, status) for every file the manifest records and every file a load reads.

    status: "ok", "missing", "damaged: ...", or "not recorded" (an older export).
    """
    source = folder / "manifest.json"
    recorded = records(manifest, source)
    names = split_names(manifest, source)
    reads = {n for n in MODEL_FILES if (folder / n).exists()} | {"model.onnx", TOKENIZER_FILE}
    reads |= set(names or ())
    rows = []
    for name in sorted(reads | set(recorded)):
        if name not in recorded:
            rows.append((name, "not recorded in the manifest (older export): not checked"))
            continue
        try:
            check_files(folder, recorded, [name])
        except IntegrityError as exc:
            rows.append((name, f"FAILED: {exc}"))
        else:
            rows.append((name, "ok"))
    return rows
