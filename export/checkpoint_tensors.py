"""Read a safetensors checkpoint one tensor at a time, by the model's own parameter names.

A streaming export (export/streaming.py) never holds the model: it asks this reader for one
tensor, converts it, writes it and drops it; the peak is one tensor (plus its fp32 copy for a
bf16 or fp16 checkpoint). The format is a JSON header and raw little-endian bytes
(https://huggingface.co/docs/safetensors), read here with plain reads: see `read`.

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
BF16_CHUNK = 1 << 24  # bf16 values read at a time (32 MB) into a widened tensor
INDEX_FILE = "model.safetensors.index.json"


def has_safetensors(folder: str | Path) -> bool:
    folder = Path(folder)
    return folder.is_dir() and ((folder / SINGLE_FILE).is_file() or (folder / INDEX_FILE).is_file())


class CheckpointTensors:
    """The stored tensors of an HF checkpoint folder (one file or shards with an index)."""

    def __init__(self, folder: str | Path) -> None:
        folder = Path(folder)
        if (folder / INDEX_FILE).is_file():
            weight_map = json.loads((folder / INDEX_FILE).read_text())["weight_map"]
            files = sorted(set(weight_map.values()))
        elif (folder / SINGLE_FILE).is_file():
            files, weight_map = [SINGLE_FILE], None
        else:
            raise ValueError(f"{folder} has no {SINGLE_FILE} or {INDEX_FILE}")
        self._entries: dict[str, tuple[Path, str, tuple[int, ...], int, int]] = {}
        for name in files:  # names read from the index must stay inside the folder
            if Path(name).name != name or name in ("", ".", ".."):
                raise ValueError(f"{folder / INDEX_FILE} names a file outside the folder: {name}")
            self._read_header(folder / name)
        if weight_map is not None:
            missing = sorted(set(weight_map) - set(self._entries))
            if missing:
                raise ValueError(f"{folder}: the index lists {missing[0]} but no shard holds it")

    def _read_header(self, path: Path) -> None:
        """The safetensors header: 8 bytes little-endian length, then JSON {name: {dtype,
        shape, data_offsets}} with offsets counted from the end of the header."""
        try:
            with open(path, "rb") as f:
                length = int.from_bytes(f.read(8), "little")
                if not 2 <= length <= 100_000_000:
                    raise ValueError("header length out of range")
                header = json.loads(f.read(length))
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path} is not a readable safetensors file: {exc}") from None
        size = path.stat().st_size
        for key, info in header.items():
            if key == "__metadata__":
                continue
            begin, end = info["data_offsets"]
            if info["dtype"] not in _DTYPES or not 0 <= begin <= end <= size - 8 - length:
                raise ValueError(f"{path}: tensor {key} has an unknown dtype or lies past the end")
            self._entries[key] = (
                path,
                info["dtype"],
                tuple(info["shape"]),
                8 + length + begin,
                end - begin,
            )

    def names(self) -> list[str]:
        return list(self._entries)

    def shape(self, key: str) -> tuple[int, ...]:
        return self._entries[key][2]

    def read(self, key: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """The stored tensor as numpy, floats as float32 (bf16 / fp16 widened exactly, as
        `from_pretrained(dtype=torch.float32)` does); start, stop: only those rows (first axis)
        are read (the parity check's table rows and head chunks, export/verify_rows.py).

        Read with plain file reads, not a memory map (safetensors' safe_open): the pages of
        a mapped file that were read stay in the process's resident set, so after a whole
        pass the RSS would hold the checkpoint, although the kernel could drop them."""
        path, dtype, shape, offset, nbytes = self._entries[key]
        stored = np.dtype(_DTYPES[dtype])
        count = nbytes // stored.itemsize
        if count != int(np.prod(shape, dtype=np.int64)):
            raise ValueError(f"{path}: tensor {key} holds {nbytes} bytes for shape {list(shape)}")
        rows = shape[0] if shape else 1
        stop = rows if stop is None else stop
        if not 0 <= start <= stop <= rows:
            raise ValueError(f"{key}: rows {start}..{stop} outside its {rows} rows")
        if (start, stop) != (0, rows):
            per_row = count // rows if rows else 0
            offset += start * per_row * stored.itemsize
            count, shape = (stop - start) * per_row, (stop - start, *shape[1:])
        if dtype == "BF16":  # the top 16 bits of a float32: read in chunks into the float32
            # array and shifted in place (the whole bf16 tensor beside it, or `astype(...) <<
            # 16`, would hold 1.1 or 2.2 GB more for a 7B model's table)
            wide = np.empty(count, dtype=np.uint32)
            for first in range(0, count, BF16_CHUNK):
                n = min(BF16_CHUNK, count - first)
                wide[first : first + n] = np.fromfile(
                    path, dtype=stored, count=n, offset=offset + 2 * first
                )
            wide <<= 16
            return wide.view(np.float32).reshape(shape)
        values = np.fromfile(path, dtype=stored, count=count, offset=offset).reshape(shape)
        if stored.kind == "f" and stored != np.float32:
            return values.astype(np.float32)
        return values


# safetensors dtype -> numpy dtype of the stored bytes (little-endian)
_DTYPES = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "BF16": "<u2",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U8": "u1",
    "BOOL": "?",
}


class ParameterMap:
    """{model parameter name: stored key}, checked by shape for every name asked for."""

    def __init__(self, tensors: CheckpointTensors, base_prefix: str) -> None:
        self.tensors = tensors
        self.base_prefix = base_prefix  # e.g. "transformer" (GPT-2), "model" (Llama)
        self._keys = set(tensors.names())

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
