"""Which files a load reads, checked against the manifest (common/integrity.py) first.

A load reads model.onnx (and model.onnx.data past 2 GB) or, where the export wrote them,
decode.onnx + body.onnx, which point into model.onnx's bytes; and tokenizer.json. Each is
checked against the manifest's `files` before onnxruntime sees it. Exports older than that
record have two hashes in their manifest (tokenizer.json's, and the model.onnx the split
files point into); those are checked where present (`Manifest.file_records`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tensorgpt.common.contract import (
    MANIFEST_FILE,
    MODEL_FILE,
    MODEL_FILES,
    TOKENIZER_FILE,
    Manifest,
)
from tensorgpt.common.files import sha256_file
from tensorgpt.common.integrity import IntegrityError, check_files, inside


@dataclass(frozen=True)
class LoadPlan:
    """What a session load reads: the split pair (decode, body) or None for model.onnx whole."""

    split: tuple[Path, Path] | None
    checked: tuple[str, ...]  # files whose hash matched the manifest


def plan_load(folder: Path, manifest: Manifest, split: bool, check: bool) -> LoadPlan:
    """Pick whole or split load and, with `check`, verify every file it will read.

    The split pair is used only when both files are there and the manifest's `model_sha256`
    (the model.onnx they point into) is model.onnx's hash; otherwise model.onnx, which is
    self-contained, is loaded whole. Raises IntegrityError naming the first bad file.
    """
    source = folder / MANIFEST_FILE
    names = manifest.split_names(source) if split else None
    if names is not None and not all((folder / n).is_file() for n in names):
        names = None  # a split file was not copied: model.onnx alone is complete
    for name in names or ():
        inside(folder, name)  # also with the check skipped: no symlink out of the folder
    recorded = manifest.file_records(source) if check else {}
    reads = [n for n in MODEL_FILES if (folder / n).exists() or n in recorded or n == MODEL_FILE]
    reads += [TOKENIZER_FILE, *(names or ())]
    hashes: dict[str, str | None] = check_files(folder, recorded, reads) if check else {}
    checked = tuple(n for n, h in hashes.items() if h)
    if names is None:
        return LoadPlan(None, checked)
    model_sha = hashes.get(MODEL_FILE) or sha256_file(folder / MODEL_FILE)
    if model_sha != (manifest.split_load or {}).get("model_sha256"):
        return LoadPlan(None, checked)  # split files of an earlier model.onnx: wrong bytes
    return LoadPlan((folder / names[0], folder / names[1]), checked)


def verify_folder(folder: Path, manifest: Manifest) -> list[tuple[str, str]]:
    """(file, status) for every file the manifest records and every file a load reads.

    status: "ok", "FAILED: ...", or "not recorded ..." (an older export).
    """
    source = folder / MANIFEST_FILE
    recorded = manifest.file_records(source)
    reads = {n for n in MODEL_FILES if (folder / n).exists()} | {MODEL_FILE, TOKENIZER_FILE}
    reads |= set(manifest.split_names(source) or ())
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
