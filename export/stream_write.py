"""Write model.onnx + one model.onnx.data, computing deferred tensors one at a time.

The graph (`onnx.ModelProto`) holds every small tensor and, for each large one, only its
name, dims and type; `deferred[name].read()` produces its values when its turn comes. Each is
appended to model.onnx.data straight from its numpy buffer, in the layout
`onnx.save_model(..., save_as_external_data=True, all_tensors_to_one_file=True)` writes (one
tensor after the other in initializer order, no padding, the same `external_data` entries),
and dropped before the next is read, so the peak is the graph plus one tensor and whatever
its `read` needs.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx.external_data_helper import set_external_data

from tensorgpt.common.progress import track

SIZE_THRESHOLD = 1024  # as exporter._save: smaller tensors stay inside model.onnx


@dataclass
class Deferred:
    """A tensor computed when it is written: `read()` returns it (numpy, the graph's dims)."""

    read: Callable[[], np.ndarray]
    source: str  # the parameter it is (derived from), named as in the decoder body
    transposed: bool = False  # the parameter's transpose (nn.Linear weights in MatMuls)


def save_streaming(
    model: onnx.ModelProto,
    deferred: dict,
    path: Path,
    log: Callable[[str], None],
) -> None:
    """Write `model` to `path` with its tensors in `path`.data; fills `deferred` tensors."""
    data = path.with_name(path.name + ".data")
    empty = sys.getsizeof(b"")  # onnx compares sys.getsizeof(raw_data) with the threshold
    with open(data, "wb") as out:
        for tensor in track(list(model.graph.initializer), "writing tensors", "tensor", log=log):
            if tensor.name in deferred:
                values = np.ascontiguousarray(deferred[tensor.name].read())
                _check(tensor, values)
            elif tensor.HasField("raw_data"):
                values = tensor.raw_data
            else:
                continue
            size = values.nbytes if isinstance(values, np.ndarray) else len(values)
            if empty + size < SIZE_THRESHOLD:
                if isinstance(values, np.ndarray):
                    tensor.raw_data = values.tobytes()
                continue
            offset = out.tell()
            out.write(memoryview(values).cast("B") if isinstance(values, np.ndarray) else values)
            del values
            tensor.raw_data = b""  # set_external_data wants the field present
            set_external_data(tensor, data.name, offset, size)
            tensor.ClearField("raw_data")
    onnx.save_model(model, str(path))


def _check(tensor: onnx.TensorProto, values: np.ndarray) -> None:
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)
    if values.shape != tuple(tensor.dims) or values.dtype != dtype:
        raise RuntimeError(
            f"{tensor.name}: read {values.dtype} {list(values.shape)}, the graph holds "
            f"{dtype} {list(tensor.dims)}"
        )
