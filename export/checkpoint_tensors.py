"""Read a safetensors checkpoint one tensor at a time, by the model's own parameter names.

A streaming export (export/streaming.py) never holds the model: it asks this reader for one
tensor, converts it, writes it and drops it. `safe_open` memory-maps each shard and copies
out only the tensor asked for, so the peak is one tensor (plus its fp32 copy for a bf16 or
fp16 checkpoint).

Names: transformers loads a checkpoint into parameters whose names may differ from the
stored keys (GPT-2's published files omit the `transformer.` prefix; some checkpoints carry
it). `ParameterMap` finds, for every parameter name, the stored key with the same shape, and
refuses the checkpoint in one line when a parameter has none: nothing is assumed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


def has_safetensors(folder: str | Path) -> bool:
    folder = Path(folder)
    return folder.is_dir() and ((folder / SINGLE_FILE).is_file() or (folder / INDEX_FILE).is_file())


class CheckpointTensors:
    """The stored tensors of an HF checkpoint folder (one file or shards with an index)."""

    def __init__(self, folder: str | Path) -> None:
        from safetensors import safe_open

        folder = Path(folder)
        if (folder / INDEX_FILE).is_file():
            weight_map = json.loads((folder / INDEX_FILE).read_text())["weight_map"]
            files = sorted(set(weight_map.values()))
        elif (folder / SINGLE_FILE).is_file():
            files = [SINGLE_FILE]
            weight_map = None
        else:
            raise ValueError(f"{folder} has no {SINGLE_FILE} or {INDEX_FILE}")
        for name in files:  # names read from the index must stay inside the folder
            if Path(name).name != name:
                raise ValueError(f"{folder / INDEX_FILE} names a file outside the folder: {name}")
        self._handles = {f: safe_open(str(folder / f), framework="pt") for f in files}
        self._where: dict[str, str] = {}
        for f, handle in self._handles.items():
            for key in handle.keys():  # noqa: SIM118  (safe_open is no dict)
                self._where[key] = f
        if weight_map is not None:
            missing = sorted(set(weight_map) - set(self._where))
            if missing:
                raise ValueError(f"{folder}: the index lists {missing[0]} but no shard holds it")

    def keys(self) -> list[str]:
        return list(self._where)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._handles[self._where[key]].get_slice(key).get_shape())

    def read(self, key: str) -> np.ndarray:
        """The stored tensor as float32 numpy (bf16 / fp16 widened exactly, as
        `from_pretrained(dtype=torch.float32)` does)."""
        import torch

        tensor = self._handles[self._where[key]].get_tensor(key)
        if tensor.is_floating_point():
            tensor = tensor.to(torch.float32)
        return tensor.numpy()


class ParameterMap:
    """{model parameter name: stored key}, checked by shape for every name asked for."""

    def __init__(self, tensors: CheckpointTensors, base_prefix: str) -> None:
        self.tensors = tensors
        self.base_prefix = base_prefix  # e.g. "transformer" (GPT-2), "model" (Llama)
        self._keys = set(tensors.keys())

    def key(self, name: str, shape: tuple[int, ...]) -> str:
        prefix = f"{self.base_prefix}."
        candidates = [name]
        if name.startswith(prefix):
            candidates.append(name[len(prefix) :])
        else:
            candidates.append(prefix + name)
        for key in candidates:
            if key in self._keys:
                if self.tensors.shape(key) != tuple(shape):
                    raise ValueError(
                        f"checkpoint tensor {key} has shape {list(self.tensors.shape(key))}, "
                        f"the model's {name} needs {list(shape)}"
                    )
                return key
        raise ValueError(
            f"the checkpoint holds no tensor for the model's {name} (looked for "
            f"{', '.join(candidates)}); export it without --stream"
        )
