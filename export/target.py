"""What `tensorgpt export` may write to, decided before the model is loaded.

OUT_DIR is created, or replaced with --force. --force replaces only a folder that is empty or
is a tensorgpt export (its manifest.json says so), and never a folder whose removal would
take something else with it: `/`, the working directory, the source checkpoint, or a parent
of either. A typo (`tensorgpt export ck "" --force`, `... . --force`, `ck ck --force`) is
refused in a second, with nothing touched.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tensorgpt.common.contract import FORMAT, MANIFEST_FILE


def is_export(folder: Path) -> bool:
    """True when folder/manifest.json says the folder was written by tensorgpt export."""
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == FORMAT


def source_path(source: str) -> Path | None:
    """The local file or folder `source` reads (None for a hub id), resolved."""
    from tensorgpt.export.load import resolve

    where, gguf = resolve(source)
    path = Path(where) / gguf if gguf else Path(where)
    return path.resolve() if path.exists() else None


def _protected(source: Path | None) -> list[tuple[Path, str]]:
    places = [] if source is None else [(source, "the source model")]
    return [*places, (Path.cwd().resolve(), "the working directory")]


def check_target(out_dir: Path, force: bool, source: Path | None = None) -> Path:
    """Fail early, before any expensive work, on a target we must not or cannot write.

    Returns OUT_DIR resolved; its parent exists afterwards (`mkdir -p`)."""
    resolved = out_dir.expanduser().resolve()
    if resolved.parent == resolved:
        raise ValueError(f"OUT_DIR {out_dir} is the filesystem root: refusing to write there")
    for place, what in _protected(source):
        if resolved == place or resolved in place.parents:
            relation = "is" if resolved == place else "contains"
            raise ValueError(
                f"OUT_DIR {out_dir} {relation} {what} ({place}): refusing to replace it; "
                "pick a new folder for the export"
            )
    if resolved.exists() and not resolved.is_dir():
        raise ValueError(f"OUT_DIR {out_dir} exists and is not a folder")
    if resolved.is_dir() and any(resolved.iterdir()):
        if not force:
            raise ValueError(f"OUT_DIR {out_dir} already exists; pass --force to replace it")
        if not is_export(resolved):
            raise ValueError(
                f"OUT_DIR {out_dir} is not empty and is not a tensorgpt export (no manifest.json "
                "saying so): --force only replaces an earlier export; move it away or pick "
                "another folder"
            )
    parent = resolved.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)  # like `mkdir -p`: out/smollm2 just works
    except OSError as exc:
        raise ValueError(
            f"cannot create the parent folder of OUT_DIR {parent}: {exc.strerror}"
        ) from None
    if not os.access(parent, os.W_OK):
        raise ValueError(f"no write permission in {parent}")
    return resolved
