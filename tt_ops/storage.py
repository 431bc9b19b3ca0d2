"""One safetensors file per compressed table: the cores, plus JSON facts in the metadata.

Tensors: "cores.0" .. "cores.{d-1}" (and "row_ranks", int32 (V, d+1), for per-token TT with
per-row ranks). Safetensors metadata (str -> str):
    format          "tensorgpt-tt"
    format_version  "1"
    tensorgpt       JSON: method ("tt" | "tt-matrix"), vocab_size, dim, dtype, ranks,
                    core_shapes, num_params, source, and per method
                    tt:        mode_sizes, padded_dim, padding (zero entries per row),
                               rank_caps, rel_error, rank_mode
                    tt-matrix: vocab_factors, dim_factors, padded_vocab, padding (zero rows),
                               rank_caps, rel_error
The file loads without the source model. Writes go to a temporary file in the same folder,
then os.replace, so a crash never leaves half a file under the final name.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from tensorgpt.common.files import write_atomic

from .per_token import PerTokenTT
from .tt_matrix import TTMatrix

FORMAT = "tensorgpt-tt"
FORMAT_VERSION = "1"


def _facts(obj: PerTokenTT | TTMatrix, dtype: np.dtype, source: str | None) -> dict:
    facts = {
        "vocab_size": obj.vocab_size,
        "dim": obj.dim,
        "dtype": str(dtype),
        "ranks": list(obj.ranks),
        "core_shapes": [list(c.shape) for c in obj.cores],
        "num_params": obj.num_params(),
        "source": source,
        "rank_caps": None if obj.rank_caps is None else list(obj.rank_caps),
        "rel_error": obj.rel_error,
    }
    if isinstance(obj, PerTokenTT):
        facts |= {
            "method": "tt",
            "mode_sizes": list(obj.mode_sizes),
            "padded_dim": obj.padded_dim,
            "padding": obj.padded_dim - obj.dim,
            "rank_mode": obj.rank_mode,
        }
    else:
        facts |= {
            "method": "tt-matrix",
            "vocab_factors": list(obj.vocab_factors),
            "dim_factors": list(obj.dim_factors),
            "padded_vocab": obj.padded_vocab,
            "padding": obj.padded_vocab - obj.vocab_size,
        }
    return facts


def save_compressed(
    path: str | os.PathLike,
    obj: PerTokenTT | TTMatrix,
    source: str | None = None,
    dtype: np.dtype | str | None = None,
) -> Path:
    """Write `obj` to `path` (one .safetensors file); cores cast to `dtype` if given."""
    from safetensors.numpy import save_file

    if not isinstance(obj, (PerTokenTT, TTMatrix)):
        raise ValueError(f"obj must be a PerTokenTT or a TTMatrix, got {type(obj).__name__}")
    try:
        dtype = np.dtype(dtype or obj.dtype)
    except TypeError:
        raise ValueError(f"dtype must be a floating dtype, got {dtype!r}") from None
    if dtype.kind != "f":
        raise ValueError(f"dtype must be a floating dtype, got {dtype}")
    tensors = {f"cores.{k}": np.ascontiguousarray(c, dtype=dtype) for k, c in enumerate(obj.cores)}
    if isinstance(obj, PerTokenTT) and obj.row_ranks is not None:
        tensors["row_ranks"] = obj.row_ranks.astype(np.int32)
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "tensorgpt": json.dumps(_facts(obj, dtype, source)),
    }
    path = Path(path)
    write_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    return path


def read_metadata(path: str | os.PathLike) -> dict:
    """The JSON facts of a compressed file, without loading the cores."""
    return _open(path)[1]


def _open(path: str | os.PathLike) -> tuple[object, dict]:
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        handle = safe_open(str(path), framework="np")
    except Exception as exc:  # safetensors raises its own error type for corrupt headers
        raise ValueError(f"{path} is not a readable safetensors file: {exc}") from exc
    meta = handle.metadata() or {}
    if meta.get("format") != FORMAT:
        raise ValueError(
            f"{path} is not a tensorgpt compressed table (format {meta.get('format')!r})"
        )
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path} has format_version {meta.get('format_version')!r}, expected 1")
    return handle, json.loads(meta["tensorgpt"])


def load_compressed(path: str | os.PathLike) -> PerTokenTT | TTMatrix:
    """Read a file written by save_compressed back into a PerTokenTT or TTMatrix."""
    handle, facts = _open(path)
    names = set(handle.keys())
    n_cores = len(facts["core_shapes"])
    missing = [f"cores.{k}" for k in range(n_cores) if f"cores.{k}" not in names]
    if missing:
        raise ValueError(f"{path} lacks tensors {missing}")
    cores = [handle.get_tensor(f"cores.{k}") for k in range(n_cores)]
    caps = facts.get("rank_caps")
    common = {"rank_caps": None if caps is None else tuple(caps), "rel_error": facts["rel_error"]}
    if facts["method"] == "tt":
        row_ranks = handle.get_tensor("row_ranks") if "row_ranks" in names else None
        return PerTokenTT(
            cores=cores,
            mode_sizes=tuple(facts["mode_sizes"]),
            dim=facts["dim"],
            row_ranks=row_ranks,
            rank_mode=facts["rank_mode"],
            **common,
        )
    if facts["method"] == "tt-matrix":
        return TTMatrix(
            cores=cores,
            vocab_factors=tuple(facts["vocab_factors"]),
            dim_factors=tuple(facts["dim_factors"]),
            vocab_size=facts["vocab_size"],
            dim=facts["dim"],
            **common,
        )
    raise ValueError(f"{path} has unknown method {facts['method']!r}")
