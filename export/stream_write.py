"""Write model.onnx + one model.onnx.data, computing deferred tensors one at a time.

The graph (`onnx.ModelProto`) holds every small tensor and, for each large one, only its
name, dims and type; `deferred[name].read()` produces its values when its turn comes. Each is
appended to model.onnx.data with onnx's own `save_external_data` (the same layout
`onnx.save_model(..., save_as_external_data=True, all_tensors_to_one_file=True)` writes: one
tensor after the other, in initializer order) and dropped before the next is read, so the
peak is the graph plus one tensor and whatever its `read` needs.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx.external_data_helper import save_external_data, set_external_data

from tensorgpt.common.progress import track

SIZE_THRESHOLD = 1024  # as exporter._save: smaller tensors stay inside model.onnx


@dataclass
class Deferred:
    """A tensor computed when it is written: `read()` returns it (numpy, the graph's dims)."""

    read: Callable[[], np.ndarray]
    source: str  # the parameter it is (derived from), named as in the decoder body


def save_streaming(
    model: onnx.ModelProto,
    deferred: dict,
    path: Path,
    log: Callable[[str], None],
) -> None:
    """Write `model` to `path` with its tensors in `path`.data; fills `deferred` tensors."""
    data = path.with_name(path.name + ".data")
    data.unlink(missing_ok=True)
    data.touch()
    for tensor in track(list(model.graph.initializer), "writing tensors", "tensor", log=log):
        if tensor.name in deferred:
            values = deferred[tensor.name].read()
            if values.shape != tuple(tensor.dims):
                raise RuntimeError(
                    f"{tensor.name}: read {list(values.shape)}, the graph says {list(tensor.dims)}"
                )
            tensor.raw_data = values.tobytes()
            del values
        elif not tensor.HasField("raw_data"):
            continue
        if sys.getsizeof(tensor.raw_data) < SIZE_THRESHOLD:
            continue
        set_external_data(tensor, data.name)
        save_external_data(tensor, str(path.parent))
        tensor.ClearField("raw_data")
    onnx.save_model(model, str(path))
