"""The measurement cache an export folder may carry: `.tensorgpt-measurements.json`.

`tensorgpt compare` and `sweep` (tensorgpt/compare.py) write each folder's perplexity there,
keyed by the model files (`file_key`) and the text options, so a rerun only re-times decoding.
It is read here, in the runtime layer, because `tensorgpt run` reads it too
(runtime_demo/known_quality.py). Standard library only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tensorgpt.common.contract import MODEL_FILES

CACHE_NAME = ".tensorgpt-measurements.json"
CACHE_VERSION = 1


def file_key(folder: Path) -> dict[str, list[int]]:
    """size and mtime of the weights: cheap to read, changes whenever the export is redone."""
    key = {}
    for name in MODEL_FILES:
        path = folder / name
        if path.exists():
            st = path.stat()
            key[name] = [st.st_size, st.st_mtime_ns]
    return key


def load_cache(folder: Path) -> dict[str, Any]:
    """The cache's entries ({key: measurement}); {} when absent, unreadable or of another
    version."""
    try:
        data = json.loads((folder / CACHE_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION:
        return {}
    entries = data.get("entries")
    return entries if isinstance(entries, dict) else {}
