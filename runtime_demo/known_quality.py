"""What earlier measurements say about an export's quality, read before generating from it.

`tensorgpt compare` and `tensorgpt sweep` cache each folder's perplexity in the folder
(runtime_demo/measurements.py, `.tensorgpt-measurements.json`). `tensorgpt run` reads those
entries so that a variant known to be broken (TT rank 4 on SmolLM2: perplexity in the
millions) does not generate garbage without a word.

Rule: a perplexity above the vocabulary size is worse than guessing every token uniformly at
random, which no working language model does on text of its own language; such a model is
called broken. Entries measured on other files (the export was redone) are ignored.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from .measurements import file_key, load_cache


def cached_perplexities(folder: str | Path) -> list[dict]:
    """Cached perplexity results that belong to the folder's current model files."""
    folder = Path(folder)
    current = file_key(folder)
    found = []
    for key, value in load_cache(folder).items():
        try:
            fields = json.loads(key)
        except ValueError:
            continue
        if (
            isinstance(fields, dict)
            and fields.get("kind") == "perplexity"
            and fields.get("files") == current
            and isinstance(value, dict)
            and isinstance(value.get("perplexity"), (int, float))
        ):
            found.append(value)
    return found


def broken_warning(folder: str | Path, vocab_size: int) -> str | None:
    """One line for stderr if a cached perplexity says the model is broken, else None."""
    worst = max((r["perplexity"] for r in cached_perplexities(folder)), default=None)
    if worst is None or (math.isfinite(worst) and worst <= vocab_size):
        return None
    shown = "infinite" if math.isinf(worst) else f"{worst:.3g}"
    return (
        f"warning: this export's measured perplexity is {shown} (tensorgpt compare, cached in "
        f"{Path(folder).name}), worse than guessing uniformly among its {vocab_size} tokens: "
        "expect meaningless text"
    )
