"""Tensor-Train math for embedding tables: decompositions, metrics, storage (numpy + TensorLy).

    per_token.py   PerTokenTT, decompose_per_token   TensorGPT: one MPS per row
    tt_svd.py      batched_tt_svd                    the batched TT-SVD engine
    tt_matrix.py   TTMatrix, decompose_tt_matrix     shared-core TT-matrix of the whole table
    metrics.py     table_metrics, compression_ratio
    storage.py     save_compressed, load_compressed  one safetensors file + JSON metadata
    ratios.py      paper_ranks, paper_ratios         the paper's table from shapes alone
    shapes.py      paper_mode_sizes, suggest_factors

Names are imported on first use, so `import tensorgpt.tt_ops.commands` (the CLI) stays cheap.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "PerTokenTT": "per_token",
    "decompose_per_token": "per_token",
    "TTMatrix": "tt_matrix",
    "decompose_tt_matrix": "tt_matrix",
    "batched_tt_svd": "tt_svd",
    "table_metrics": "metrics",
    "compression_ratio": "metrics",
    "save_compressed": "storage",
    "load_compressed": "storage",
    "read_metadata": "storage",
    "paper_ranks": "ratios",
    "paper_ratios": "ratios",
    "paper_mode_sizes": "shapes",
    "suggest_factors": "shapes",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
