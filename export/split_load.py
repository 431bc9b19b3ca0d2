"""Split model.onnx into a weight-decode graph and a body graph, for a low-peak session load.

Why: the q4 weights and a compressed table are rebuilt by initializer-only subgraphs that
onnxruntime constant-folds at session load. Its folding pass keeps every folded tensor until
the pass ends, so the load peak is about the *sum* of all decode outputs and intermediates
(2.7 GB for a 75 MB SmolLM2 file; docs/quality_notes.md, "Load-time memory"). Running the same
subgraph as an ordinary graph frees each intermediate after its last use instead.

What is written beside model.onnx (model.onnx itself is untouched and stays self-contained):

    decode.onnx   no inputs; outputs = every tensor the decode subgraph hands to the rest
                  of the model (the "frontier": decoded weights, the rebuilt table).
    body.onnx     model.onnx without the decode nodes; each frontier tensor is a placeholder
                  initializer whose data the runtime supplies at load
                  (common/ort_load.py, `open_split_session`, which the export's
                  parity check uses too).

Neither copies weight bytes: their initializers are ONNX external-data references into
model.onnx itself (the raw bytes of a tensor sit contiguously inside the protobuf file), or
into model.onnx.data for a model saved with external data. Tensors that cannot be located
(under 256 bytes, or not stored as raw bytes) are copied inline.

The decode subgraph: nodes whose inputs are all initializers, Constant outputs or outputs of
other decode nodes, with at least one initializer among their ancestors (a pure-Constant cone,
such as a shape vector, stays in the body).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from tensorgpt.common.contract import BODY_FILE, DECODE_FILE, MODEL_FILE
from tensorgpt.common.files import sha256_file, write_atomic
from tensorgpt.common.ort_load import decode_weights

# Placeholder of a frontier tensor: external data in a file that does not exist. The runtime
# replaces it with SessionOptions.add_external_initializers, which wants exactly such an
# external-data placeholder and never reads it; anything that did read it would fail loudly.
PLACEHOLDER_LOCATION = "decoded-at-load.missing"
_INLINE_BELOW = 256  # bytes; smaller tensors are copied (a reference costs about 80 bytes)
_RAW_DATA_TAG = 0x4A  # TensorProto.raw_data: field 9, length-delimited
_NAME_TAG = 0x42  # TensorProto.name: field 8, length-delimited


# onnxruntime does not constant-fold these (QDQ units stay for its quantized kernels), so they
# stay in the body: moving them would change which kernels run.
_NOT_FOLDED = {
    "DequantizeLinear",
    "QuantizeLinear",
    "DynamicQuantizeLinear",
    "RandomNormal",
    "RandomNormalLike",
    "RandomUniform",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
}
# Below this many bytes of decoded tensors a split saves nothing worth two more files.
MIN_FRONTIER_BYTES = 16 << 20


def decode_nodes(graph: onnx.GraphProto) -> tuple[list[int], list[str], list[int]]:
    """The decode subgraph of `graph`: (decode node indices, frontier tensor names, helpers).

    Decode nodes are moved out of the body; frontier tensors are the decode outputs the body
    (or the graph's outputs) reads; helpers are Constant-only nodes (a shape vector, say) that
    decode nodes read: they are copied into the decode graph and also stay in the body.
    All index lists are in graph order, which is topological.
    """
    initializers = {t.name for t in graph.initializer}
    graph_inputs = {v.name for v in graph.input}
    constant = set(initializers - graph_inputs)  # tensors known at load
    weight_cone = set(constant)  # ... that depend on stored data
    picked: list[int] = []
    pure: dict[str, int] = {}  # output of a Constant-only node -> its index
    for i, node in enumerate(graph.node):
        if node.op_type in _NOT_FOLDED or any(
            a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
            for a in node.attribute
        ):
            continue
        inputs = [name for name in node.input if name]
        if not all(name in constant for name in inputs):
            continue
        constant.update(node.output)
        if any(name in weight_cone for name in inputs):
            weight_cone.update(node.output)
            picked.append(i)
        else:
            pure.update(dict.fromkeys(node.output, i))
    helpers: set[int] = set()
    todo = [name for i in picked for name in graph.node[i].input if name in pure]
    while todo:
        i = pure[todo.pop()]
        if i not in helpers:
            helpers.add(i)
            todo.extend(name for name in graph.node[i].input if name in pure)
    picked_set = set(picked)
    used_outside = {v.name for v in graph.output}
    for i, node in enumerate(graph.node):
        if i not in picked_set:
            used_outside.update(node.input)
    frontier = [name for i in picked for name in graph.node[i].output if name in used_outside]
    return picked, frontier, sorted(helpers)


def _raw_offsets(model_path: Path, graph: onnx.GraphProto) -> dict[str, tuple[int, int]]:
    """(offset, length) of each large raw-data initializer's bytes inside model.onnx.

    Found by the protobuf framing every such tensor has (its name field followed by its
    raw_data field), searched in file order and checked byte for byte.
    """
    data = model_path.read_bytes()
    view = memoryview(data)
    found: dict[str, tuple[int, int]] = {}
    position = 0
    for tensor in graph.initializer:
        raw = tensor.raw_data
        if tensor.data_location == TensorProto.EXTERNAL or len(raw) < _INLINE_BELOW:
            continue
        name = tensor.name.encode()
        prefix = (
            bytes([_NAME_TAG])
            + _varint(len(name))
            + name
            + bytes([_RAW_DATA_TAG])
            + _varint(len(raw))
        )
        at = data.find(prefix, position)
        if at < 0:
            continue
        start = at + len(prefix)
        if view[start : start + len(raw)] != raw:
            continue
        found[tensor.name] = (start, len(raw))
        position = start + len(raw)
    return found


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _external(name: str, dtype: int, dims, location: str, offset: int, length: int):
    tensor = TensorProto()
    tensor.name = name
    tensor.data_type = dtype
    tensor.dims.extend(dims)
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def _reference(tensor: TensorProto, offsets: dict[str, tuple[int, int]]) -> TensorProto:
    """The initializer as a reference into the file that holds its bytes (or a copy)."""
    if tensor.data_location == TensorProto.EXTERNAL:
        ref = TensorProto()
        ref.CopyFrom(tensor)  # already external: same file, same offset
        return ref
    if tensor.name in offsets:
        offset, length = offsets[tensor.name]
        return _external(tensor.name, tensor.data_type, tensor.dims, MODEL_FILE, offset, length)
    ref = TensorProto()
    ref.CopyFrom(tensor)
    return ref


def write_split(folder: Path) -> dict | None:
    """Write decode.onnx and body.onnx beside folder/model.onnx; returns a summary or None.

    None (and nothing written) when model.onnx decodes less than MIN_FRONTIER_BYTES at load
    (an fp32 export decodes nothing). The placeholders' dtypes and shapes come from running
    decode.onnx once with onnxruntime.
    """
    model_path = folder / MODEL_FILE
    model = onnx.load(str(model_path), load_external_data=False)
    graph = model.graph
    picked, frontier, helpers = decode_nodes(graph)
    if not frontier:
        return None
    offsets = _raw_offsets(model_path, graph)
    picked_set = set(picked)
    decode_node_list = [graph.node[i] for i in sorted(picked_set | set(helpers))]
    body_node_list = [n for i, n in enumerate(graph.node) if i not in picked_set]
    decode_inputs = {name for n in decode_node_list for name in n.input}
    body_inputs = {name for n in body_node_list for name in n.input} | {
        v.name for v in graph.output
    }
    inits = {t.name: t for t in graph.initializer}

    decode_graph = helper.make_graph(
        decode_node_list,
        "decode_weights",
        [],
        [helper.make_empty_tensor_value_info(name) for name in frontier],
        [_reference(inits[name], offsets) for name in inits if name in decode_inputs],
    )
    decode_model = _like(model, decode_graph)
    decode_path = folder / DECODE_FILE
    write_atomic(decode_path, decode_model.SerializeToString())
    frontier_shapes = _frontier_shapes(decode_path)
    decoded_bytes = sum(
        int(np.prod(dims, dtype=np.int64)) * onnx.helper.tensor_dtype_to_np_dtype(dtype).itemsize
        for dtype, dims in frontier_shapes.values()
    )
    if decoded_bytes < MIN_FRONTIER_BYTES:
        decode_path.unlink()
        return None

    placeholders = []
    for name in frontier:
        dtype, dims = frontier_shapes[name]
        placeholders.append(_external(name, dtype, dims, PLACEHOLDER_LOCATION, 0, 0))
    body_graph = helper.make_graph(
        body_node_list,
        graph.name,
        list(graph.input),
        list(graph.output),
        [_reference(inits[name], offsets) for name in inits if name in body_inputs] + placeholders,
    )
    body_model = _like(model, body_graph)
    write_atomic(folder / BODY_FILE, body_model.SerializeToString())
    return {
        "decode": DECODE_FILE,
        "body": BODY_FILE,
        "decode_nodes": len(picked),
        "frontier_tensors": len(frontier),
        "decoded_bytes": decoded_bytes,
        "copied_initializers": sum(
            1
            for name in inits
            if name not in offsets and inits[name].data_location != TensorProto.EXTERNAL
        ),
    }


def add_split_load(folder: Path, check) -> dict | None:
    """write_split, then `check(folder)` (a verification dict with `passed`); the summary
    for the manifest's `split_load`, or None when there is nothing worth splitting.
    On a failed check the two files are removed and ValueError says so."""
    split = write_split(folder)
    if split is None:
        return None
    split["model_sha256"] = sha256_file(folder / MODEL_FILE)
    split["bytes"] = sum((folder / split[k]).stat().st_size for k in ("decode", "body"))
    split["verification"] = check(folder)
    if not split["verification"]["passed"]:
        for k in ("decode", "body"):
            (folder / split[k]).unlink()
        diff = split["verification"]["max_abs_logit_diff_vs_model_onnx"]
        raise ValueError(f"split load differs from model.onnx: max abs logit diff {diff:.3g}")
    return split


def _like(model: onnx.ModelProto, graph: onnx.GraphProto) -> onnx.ModelProto:
    out = helper.make_model(graph, opset_imports=list(model.opset_import))
    out.ir_version = model.ir_version
    out.producer_name = model.producer_name
    out.producer_version = model.producer_version
    return out


def _frontier_shapes(decode_path: Path) -> dict[str, tuple[int, list[int]]]:
    names, values = decode_weights(decode_path, threads=None)
    return {
        n: (helper.np_dtype_to_tensor_dtype(v.dtype), list(v.shape))
        for n, v in zip(names, values, strict=True)
    }
