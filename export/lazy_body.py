"""The body graph traced without weights; each weight is read from the checkpoint on demand.

    skeleton (params on the meta device, buffers real)  --torch.onnx, optimize=False-->
    onnx_ir model whose initializers are meta tensors   --here-->
    every parameter initializer becomes a `Deferred` read of its checkpoint tensor, every
    Transpose of such a weight a Deferred transposed read                  --optimizer-->
    the same graph as `export/body.py` writes, holding no weight bytes

Why not simply let torch.onnx optimize: its constant folder computes `Transpose(W)` of every
nn.Linear weight (the (K, N) MatMul weights the rest of the export expects) and keeps the
result in memory, the whole model at once. Here that one fold is done lazily, as a Constant
node standing where the folded Transpose's Constant would stand, so the optimizer (the same
`onnxscript` optimizer torch.onnx runs) names and orders everything as it does for a loaded
model: the test compares both graphs and all their tensors byte for byte.

Non-persistent buffers (rotary `inv_freq`, causal masks) are computed by the model's own
constructor on the CPU, as `from_pretrained` does; they are small.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import torch

from tensorgpt.export.body import trace_program
from tensorgpt.export.checkpoint_tensors import ParameterMap
from tensorgpt.export.stream_write import Deferred

BODY_PREFIX = "body."  # CachedBody's attribute: traced parameter names start with it
_PLACEHOLDER = "deferred.stream"  # external-data location of a not yet written tensor
FOLDED_FROM = "pkg.onnxscript.optimizer.folded_from"
# torch.onnx saves tensors above this many bytes as external data (onnx_ir's default), and
# onnx.load marks them `data_location: DEFAULT` when it reads them back (export/body.py)
EXTERNAL_ABOVE = 256


def skeleton(config):
    """The HF model for `config` with parameters on the meta device and real buffers."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.tie_weights()  # from_config leaves meta parameters untied
    return model.eval()


def module_name(model, module) -> str:
    for name, m in model.named_modules():
        if m is module:
            return name
    raise RuntimeError("the adapter's decoder body is not a submodule of the model")


def trace_body(adapter, model, params: ParameterMap) -> tuple[onnx.ModelProto, dict[str, Deferred]]:
    """(body ModelProto whose large weights are placeholders, {initializer name: Deferred})."""
    import onnx_ir as ir

    body = adapter.decoder_body()
    prefix = module_name(model, body)
    buffers = {n: b.detach().clone() for n, b in body.named_buffers()}
    shapes = {n: tuple(p.shape) for n, p in body.named_parameters()}
    _fake_cpu_parameters(body)
    program = trace_program(adapter, optimize=False)
    graph = program.model.graph
    for name, value in list(graph.initializers.items()):
        local = name[len(BODY_PREFIX) :] if name.startswith(BODY_PREFIX) else None
        if local in shapes:
            full = f"{prefix}.{local}" if prefix else local
            key = params.key(full, shapes[local])
            value.const_value = _lazy(ir, name, shapes[local], _reader(params, key), local)
        elif local in buffers:
            value.const_value = ir.tensor(buffers[local].numpy(), name=name)
        else:
            raise RuntimeError(f"traced initializer {name} is neither a parameter nor a buffer")
    before = set(graph.initializers)
    position = _fold_weight_transposes(ir, graph)
    program.optimize()  # what torch.onnx.export(optimize=True) runs after the trace
    _folding_order(graph, before, position)
    deferred: dict[str, Deferred] = {}
    for name, value in graph.initializers.items():
        lazy = value.const_value
        if isinstance(lazy, ir.LazyTensor):
            deferred[name] = lazy.meta["deferred"]
            value.const_value = ir.ExternalTensor(
                _PLACEHOLDER,
                offset=0,
                length=lazy.nbytes,
                dtype=lazy.dtype,
                shape=lazy.shape,
                name=name,
            )
    model = ir.serde.serialize_model(program.model)
    for tensor in model.graph.initializer:
        if tensor.name in deferred:
            del tensor.external_data[:]
            tensor.ClearField("data_location")
        if _nbytes(tensor) > EXTERNAL_ABOVE:
            tensor.data_location = onnx.TensorProto.DEFAULT
    for node in model.graph.node:  # as export/body.py's load_body does
        del node.metadata_props[:]
        node.doc_string = ""
    model.doc_string = ""
    return model, deferred


def _nbytes(tensor: onnx.TensorProto) -> int:
    itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    return int(np.prod(tensor.dims, dtype=np.int64)) * itemsize


def _fake_cpu_parameters(module) -> None:
    """Meta parameters -> fake CPU tensors (no data either). Traced as meta tensors, with
    CPU inputs, the body would not trace (mixed devices); traced all on meta, attention
    takes another decomposition than on the CPU (two more Reshapes and a Concat per graph),
    so the graph would differ from the one a loaded model gives."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    mode = FakeTensorMode(allow_non_fake_inputs=True)
    cpu = torch.device("cpu")
    for sub in module.modules():
        for name, param in list(sub._parameters.items()):
            if param is not None and param.device.type == "meta":
                fake = mode.fake_tensor_converter.from_meta_and_device(mode, param.data, cpu)
                sub._parameters[name] = torch.nn.Parameter(fake, requires_grad=False)


def _reader(params: ParameterMap, key: str) -> Callable[[], np.ndarray]:
    return lambda: params.tensors.read(key)


def _lazy(
    ir,
    name: str,
    shape: tuple[int, ...],
    read: Callable[[], np.ndarray],
    source: str,
    transposed: bool = False,
):
    tensor = ir.LazyTensor(
        lambda: ir.tensor(read()), dtype=ir.DataType.FLOAT, shape=ir.Shape(shape), name=name
    )
    tensor.meta["deferred"] = Deferred(read, source, transposed)
    return tensor


def _fold_weight_transposes(ir, graph) -> dict[str, int]:
    """Transpose(weight) -> a lazy transposed initializer, where the weight feeds only it:
    exactly the nodes onnxscript's constant folder folds whatever their size. Returns the
    position of every node output in the graph before (see `_folding_order`)."""
    position = {
        out.name: i
        for i, node in enumerate(graph)
        if node.op_type != "Constant"  # these are lifted after folding, in their own order
        for out in node.outputs
    }
    for node in list(graph):
        if node.op_type != "Transpose" or node.domain not in ("", "ai.onnx"):
            continue
        source = node.inputs[0]
        lazy = source.const_value if source is not None else None
        if not isinstance(lazy, ir.LazyTensor) or len(source.consumers()) != 1:
            continue
        perm_attr = node.attributes.get("perm")
        perm = tuple(perm_attr.value) if perm_attr is not None else None
        deferred = lazy.meta["deferred"]
        dims = tuple(int(d) for d in lazy.shape)
        shape = tuple(np.empty(dims, dtype=np.bool_).transpose(perm).shape)
        out = node.outputs[0]
        read = _transposed(deferred.read, perm)
        folded = _lazy(ir, out.name, shape, read, deferred.source, transposed=True)
        value = ir.Value(
            name=out.name,
            type=ir.TensorType(ir.DataType.FLOAT),
            shape=folded.shape,
            const_value=folded,
        )
        # what the folder records on a value it folds (onnxscript _record_contributing_values)
        folded_from = {source.name, *source.meta.get(FOLDED_FROM, set())}
        value.meta[FOLDED_FROM] = folded_from
        value.metadata_props[FOLDED_FROM] = repr(sorted(folded_from))
        out.replace_all_uses_with(value)
        graph.remove(node, safe=True)
        graph.register_initializer(value)
        if not source.consumers():
            graph.initializers.pop(source.name)
    return position


def _folding_order(graph, before: set[str], position: dict[str, int]) -> None:
    """Order the initializers as the constant folder does when it folds the Transposes
    itself: those of the traced graph first, then every folded node output in graph order
    (ours among them), then the lifted Constant nodes."""
    names = list(graph.initializers)
    kept = [n for n in names if n in before]
    folded = sorted((n for n in names if n not in before and n in position), key=position.get)
    rest = [n for n in names if n not in before and n not in position]
    values = [graph.initializers[n] for n in kept + folded + rest]
    graph.initializers.clear()
    for value in values:
        graph.register_initializer(value)


def _transposed(read, perm) -> Callable[[], np.ndarray]:
    return lambda: np.ascontiguousarray(read().transpose(perm))
