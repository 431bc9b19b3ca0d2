"""The KV-cache argument of a transformers model's forward, under its current name.

transformers 5.x renamed `past_key_values` to `cache` (in the call and in the output) and warns
with a FutureWarning on every call that uses the old name (it stops working in 5.40). Earlier
releases (>= 4.45, which pyproject.toml allows) only know `past_key_values`. Every call that
passes or reads a cache goes through these two functions, so the name is decided in one place.
"""

from __future__ import annotations

import inspect
from typing import Any


def cache_argument(module: Any) -> str:
    """ "cache" where `module.forward` takes it (transformers >= 5.x), else "past_key_values"."""
    # The deprecation decorators use functools.wraps, so the signature is the real forward's.
    parameters = inspect.signature(type(module).forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def takes_cache(module: Any) -> bool:
    """Whether `module.forward` accepts a KV cache under either name."""
    parameters = inspect.signature(type(module).forward).parameters
    return "cache" in parameters or "past_key_values" in parameters


def returned_cache(output: Any) -> Any:
    """The cache a forward returned, read without touching the deprecated attribute."""
    keys = output.keys() if hasattr(output, "keys") else ()
    return output["cache"] if "cache" in keys else output.past_key_values
