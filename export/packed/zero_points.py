"""Center the 4-bit codes: MatMulNBits' default zero point 8 instead of 0, exactly.

The minima correction (export/packed/weights.py) makes any integer zero point z exact:

    x . w = sum_b d (x_b . (q_b - z)) + sum_b (m + z d) sum(x_b)
          = MatMulNBits(x; q, d, z)    + blocksum(x) @ (m + z d)

so the choice of z changes nothing at fp32 activations, but it decides what the kernel's int8
activations (accuracy_level 4) are multiplied with. Their rounding error e (per element, zero
mean) enters as sum_i e_i d (q_i - z): with z = 0 the codes 0..15 all count positively
(E[q^2] = 77.5 for uniform codes), with z = 8 they are centered on the block's middle
(E[(q - 8)^2] = 21.5), about 3.6x less error variance for the same activations. llama.cpp's
Q4_1 x Q8_1 dot product has the centered error by construction: it multiplies the quantized
activations' own block sums with m, so its error is sum_i e_i w_i.

The correction's minima become m + 8 d, computed from the stored fp16 m and d by
initializer-only nodes (Transpose, Mul, Add) that onnxruntime folds at load (or the split
loader runs), and the zero points (all 8: byte 0x88, two 4-bit values per byte) are one
Expand of a single stored byte per weight shape, also computed at load: the file keeps the
same weight bytes (plus one byte and a shape vector per zero-point shape: 1.7 KB on SmolLM2).

Why the zero-point input is given although 8 is MatMulNBits' default for 4 bits: onnxruntime's
aarch64 build sends a 4-bit MatMulNBits *without* zero points on a CPU with int8 dot products
(cortex-a76: Raspberry Pi 5, Neoverse) to KleidiAI's kernel, which quantizes the activations
per row instead of per block of 32. Measured under qemu cortex-a76 (one 576 x 256 layer with
a strong channel): twice the x86 output error without the input, the x86 error with it; the
SmolLM2 q4-packed file without it: perplexity +3.5% over the exact grid on 128 tokens, where
x86 gives +0.8% (docs/device.md, "ARM"). With the input x86 runs the same kernel as before
(same error, same speed within 0.2%).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

CENTER = 8  # MatMulNBits' default zero point for bits = 4 (2 ** (bits - 1))
CENTERED_PREFIX = "zp8"  # the load-time zero-point tensors this pass adds: zp8/{N}x{K/64}


def zero_point_of(node: onnx.NodeProto) -> int:
    """The zero point of a 4-bit MatMulNBits as export/packed writes it: 8 when the input is
    absent (the default) or one of this pass's centered tensors, else 0 (the all-zero
    initializer of export/packed/weights.py)."""
    if len(node.input) < 4 or not node.input[3]:
        return CENTER
    return CENTER if node.input[3].startswith(f"{CENTERED_PREFIX}/") else 0


def center_zero_points(model: onnx.ModelProto) -> int:
    """Rewrite every 4-bit MatMulNBits with all-zero zero points and a minima correction
    (MatMulNBits + MatMul(blocksum, minima) -> Add) to zero point 8; returns how many."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    producer = {o: n for n in graph.node for o in n.output}
    before: dict[int, list[onnx.NodeProto]] = {}
    zero_points: dict[str, onnx.NodeProto] = {}  # one Expand per zero-point shape
    done = 0
    for node in graph.node:
        correction = _correction(node, inits, consumers, producer)
        if correction is None:
            continue
        tag = node.name or node.output[0]
        one = onnx.helper.make_node
        shifted = [
            one("Transpose", [node.input[2]], [f"{tag}/scale_kn"], perm=[1, 0]),
            one("Mul", [f"{tag}/scale_kn", f"{tag}/center"], [f"{tag}/center_scale"]),
            one("Add", [correction.input[1], f"{tag}/center_scale"], [f"{tag}/min_centered"]),
        ]
        graph.initializer.append(
            numpy_helper.from_array(np.array(CENTER, np.float32), f"{tag}/center")
        )
        before[id(correction)] = shifted
        correction.input[1] = f"{tag}/min_centered"
        node.input[3] = _centered_zero_points(graph, zero_points, inits[node.input[3]].dims)
        done += 1
    if done:
        nodes = list(zero_points.values())
        for node in graph.node:
            nodes.extend(before.get(id(node), []))
            nodes.append(node)
        del graph.node[:]
        graph.node.extend(nodes)
        read = {name for node in graph.node for name in node.input}
        keep = [t for t in graph.initializer if t.name in read]
        del graph.initializer[:]
        graph.initializer.extend(keep)
    return done


def _centered_zero_points(graph: onnx.GraphProto, made: dict[str, onnx.NodeProto], dims) -> str:
    """Name of the (N, ceil(K/32 / 2)) uint8 tensor of 0x88 (zero point 8 in both nibbles),
    built at load by Expand of one stored byte; one per shape, shared by its nodes."""
    shape = [int(d) for d in dims]
    name = f"{CENTERED_PREFIX}/{'x'.join(map(str, shape))}"
    if name not in made:
        byte, dims_name = f"{CENTERED_PREFIX}.byte", f"{name}.shape"
        if not made:  # the first shape brings the one byte all of them expand
            graph.initializer.append(
                numpy_helper.from_array(np.array([CENTER * 17], np.uint8), byte)
            )
        graph.initializer.append(numpy_helper.from_array(np.array(shape, np.int64), dims_name))
        made[name] = onnx.helper.make_node("Expand", [byte, dims_name], [name])
    return name


def _correction(node, inits, consumers, producer) -> onnx.NodeProto | None:
    """The minima correction MatMul added to `node`'s output, if `node` is a 4-bit
    MatMulNBits with zero points all 0 and fp32 scales and minima known at load."""
    if node.op_type != "MatMulNBits" or len(node.input) < 4 or not node.input[3]:
        return None
    if next((a.i for a in node.attribute if a.name == "bits"), 4) != 4:
        return None
    zero = inits.get(node.input[3])
    if zero is None or numpy_helper.to_array(zero).any():
        return None
    users = consumers.get(node.output[0], [])
    if len(users) != 1 or users[0].op_type != "Add":
        return None
    other = [name for name in users[0].input if name != node.output[0]]
    corr = producer.get(other[0]) if len(other) == 1 else None
    if corr is None or corr.op_type != "MatMul" or len(consumers.get(corr.output[0], [])) != 1:
        return None
    if not all(_known_at_load(name, inits, producer) for name in (node.input[2], corr.input[1])):
        return None
    return corr


def _known_at_load(name: str, inits, producer) -> bool:
    """An initializer or the Cast of one (the fp16 scales and minima)."""
    if name in inits:
        return True
    node = producer.get(name)
    return node is not None and node.op_type == "Cast" and node.input[0] in inits
