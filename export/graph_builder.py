"""A tiny helper for writing ONNX nodes by hand with deterministic names."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper


class GraphBuilder:
    """Collects nodes and initializers; every name is `prefix/...` and numbered in call order."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0
        self._consts: dict[str, np.ndarray] = {}

    def const(self, name: str, value: np.ndarray) -> str:
        """An initializer; asking twice for the same name and value returns the same tensor."""
        value = np.asarray(value, order="C")  # (ascontiguousarray would turn a scalar into 1-D)
        full, n = f"{self.prefix}.{name}", 1
        while full in self._consts:
            old = self._consts[full]
            if old.dtype == value.dtype and old.shape == value.shape and np.array_equal(old, value):
                return full
            n += 1
            full = f"{self.prefix}.{name}_{n}"
        self._consts[full] = value
        self.initializers.append(numpy_helper.from_array(value, full))
        return full

    def placeholder(self, name: str, shape: tuple[int, ...], dtype) -> str:
        """An initializer with dims and type but no values yet (a streaming export fills it
        when it writes the file: export/stream_write.py)."""
        full = f"{self.prefix}.{name}"
        if full in self._consts:
            raise ValueError(f"initializer {full} exists already")
        self._consts[full] = np.empty(0, dtype)
        tensor = onnx.TensorProto(name=full, dims=list(shape))
        tensor.data_type = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
        self.initializers.append(tensor)
        return full

    def ints(self, name: str, values: list[int]) -> str:
        return self.const(name, np.asarray(values, dtype=np.int64))

    def op(self, op_type: str, inputs: list[str], output: str | None = None, **attrs) -> str:
        self._count += 1
        name = f"{self.prefix}/{op_type}_{self._count}"
        out = output or f"{name}:0"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=name, **attrs))
        return out


def nibbles(b: GraphBuilder, packed: str) -> tuple[str, str]:
    """uint8 bytes holding two 4-bit codes -> (low nibbles, high nibbles), both uint8.
    BitwiseAnd/BitShift over initializers fold at load."""
    low = b.op("BitwiseAnd", [packed, b.const("nibble_mask", np.array(15, np.uint8))])
    high = b.op(
        "BitShift", [packed, b.const("nibble_shift", np.array(4, np.uint8))], direction="RIGHT"
    )
    return low, high


def nibble_pairs(b: GraphBuilder, packed: str, axis: int) -> str:
    """uint8 bytes holding two 4-bit codes (low nibble first) -> the codes, a new axis of 2
    inserted at `axis` (low, high)."""
    low, high = nibbles(b, packed)
    at = b.ints(f"nibble_axis{axis}", [axis])
    return b.op("Concat", [b.op("Unsqueeze", [low, at]), b.op("Unsqueeze", [high, at])], axis=axis)
