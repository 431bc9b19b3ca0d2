"""`--runtime packed`: the q4 transformer weights stay 4-bit in memory (onnxruntime MatMulNBits).

The portable q4 graph (export/weight_blocks.py) decodes every weight to fp32 at session load.
This transformation keeps the same GGUF Q4_1 grid, w = d * q + m per block of 32 along K,
but runs it packed, with an exact split of the product (x a row of K activations):

    x . w[:, n] = sum_b d[b, n] * (x_b . q_b[:, n])  +  sum_b m[b, n] * sum(x_b)
                = MatMulNBits(x; codes q, scales d, zero point 0)  +  blocksum(x) @ m

MatMulNBits' fast CPU kernels (prepacked at load, int8 activations at accuracy_level 4) need
integer zero points; Q4_1's minimum as a float zero point (z = -m / d) would take the kernel's
slow path, which rebuilds the fp32 weight on every call (onnxruntime issue 28552). The second
term is two small fp32 MatMuls: blocksum(x) = x @ E with E (K, K/32) the 0/1 block indicator
(rank-agnostic, one per distinct input tensor, shared by q/k/v or gate/up), then @ m (K/32, N):
1/32 of the main product's multiply-adds.

MatMulNBits' layout differs from GGUF's: B is (N, K/32, 16) with consecutive elements in the
low then high nibble; codes are re-packed, never re-rounded. d and m are stored fp16 (as in
the GGUF) and Cast to fp32 by initializer-only nodes that onnxruntime folds at load (K*N/16
bytes each, not the K*N*4 of a decoded weight).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from tensorgpt.export.graph_builder import GraphBuilder
from tensorgpt.export.weight_blocks import BLOCK, SKIP_PREFIXES, weight_key
from tensorgpt.tt_ops.row_codecs import decode_q4_blocks, encode_q4_blocks_exact

MS_DOMAIN = "com.microsoft"
# 4: int8 activations per block of 32 (llama.cpp's q8 activations), 1.2-1.3x faster per decode
# step than 1 (fp32 activations, the portable file's exact arithmetic). Level 4 alone cost
# SmolLM2 +0.34% perplexity (+0.41% worst domain, over the 0.3% target); with the outlier
# channels of the norm outputs taken out of the int8 blocks (export/packed/outlier_channels.py)
# it measured within the target (docs/device.md). The export's exact-grid check runs level 1.
ACCURACY_LEVEL = 4


def gguf_to_nbits(packed: np.ndarray) -> np.ndarray:
    """GGUF Q4_1 codes (K/32, 16, N) (byte j: element j low, j + 16 high) -> MatMulNBits B
    (N, K/32, 16) (byte j: element 2j low, 2j + 1 high)."""
    q = np.concatenate([packed & 15, packed >> 4], axis=1)  # (K/32, 32, N) codes in order
    q = np.ascontiguousarray(q.transpose(2, 0, 1))  # (N, K/32, 32)
    return (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)


def nbits_to_codes(b: np.ndarray) -> np.ndarray:
    """MatMulNBits B (N, K/32, 16) -> codes (K, N) uint8 (the inverse layout, for checks)."""
    n, nb, _ = b.shape
    q = np.stack([b & 15, b >> 4], axis=-1).reshape(n, nb * BLOCK)
    return np.ascontiguousarray(q.T)


def matmul_nbits(
    b: GraphBuilder,
    x: str,
    codes: str,
    scales: str,
    k: int,
    n: int,
    bits: int,
    zero_points: str = "",
    bias: str = "",
    accuracy_level: int | None = None,
) -> str:
    """One com.microsoft MatMulNBits node: x (..., K) -> (..., N)."""
    accuracy_level = ACCURACY_LEVEL if accuracy_level is None else accuracy_level
    inputs = [x, codes, scales, zero_points, "", bias] if bias else [x, codes, scales, zero_points]
    return b.op(
        "MatMulNBits",
        inputs,
        domain=MS_DOMAIN,
        K=k,
        N=n,
        bits=bits,
        block_size=BLOCK,
        accuracy_level=accuracy_level,
    )


def _fp32(b: GraphBuilder, name: str, value: np.ndarray) -> str:
    """An fp16 initializer seen as fp32 (Cast folded at load)."""
    return b.op("Cast", [b.const(name, value.astype(np.float16))], to=onnx.TensorProto.FLOAT)


class _BlockSums:
    """x -> blocksum(x) (..., K/32), built once per input tensor."""

    def __init__(self, b: GraphBuilder) -> None:
        self.b = b
        self.done: dict[str, str] = {}

    def __call__(self, x: str, k: int) -> str:
        if x not in self.done:
            indicator = np.repeat(np.eye(k // BLOCK, dtype=np.float32), BLOCK, axis=0)
            self.done[x] = self.b.op("MatMul", [x, self.b.const(f"block_sum_{k}", indicator)])
        return self.done[x]


def pack_weights_q4(
    model: onnx.ModelProto, accuracy_level: int | None = None
) -> tuple[dict[str, np.ndarray], dict]:
    """Replace the body's MatMul / Gemm(no transpose) by MatMulNBits + minima correction.

    Same weights and the same encoder as `quantize_weights_q4`, so the returned
    {weight_key(original): decoded (K, N)} lets PyTorch run the identical grid, and the report
    has the same keys.
    """
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    b = GraphBuilder("q4nbits")
    sums = _BlockSums(b)
    decoded: dict[str, np.ndarray] = {}
    stored: dict[str, tuple[str, str, str, int, int]] = {}
    report = {"weights": 0, "params": 0, "exact_weights": 0, "max_rel_change": 0.0}
    new_nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        target = _packable(node, inits)
        if target is None:
            new_nodes.append(node)
            continue
        name = node.input[1]
        if name not in stored:
            w = numpy_helper.to_array(inits[name]).astype(np.float32)
            # the source's own 4-bit grid where it has one (Q4_0 / Q4_1 GGUF), as portable q4
            packed, scale, minimum, _ = encode_q4_blocks_exact(w)
            back = decode_q4_blocks(packed, scale, minimum)
            k, n = w.shape
            tag = f"w{len(stored)}"
            stored[name] = (
                b.const(f"{tag}.q4", gguf_to_nbits(packed)),
                _fp32(b, f"{tag}.scale", np.ascontiguousarray(scale.T)),  # (N, K/32)
                _fp32(b, f"{tag}.min", minimum),  # (K/32, N)
                k,
                n,
            )
            decoded[weight_key(w)] = back
            change = float(np.abs(back - w).max() / max(float(np.abs(w).max()), 1e-30))
            report["weights"] += 1
            report["params"] += w.size
            report["exact_weights"] += int(change <= 1e-6)
            report["max_rel_change"] = max(report["max_rel_change"], change)
        codes, scales, minima, k, n = stored[name]
        zero = b.const(
            f"zero_points_{n}x{k // BLOCK}", np.zeros((n, -(-k // BLOCK // 2)), np.uint8)
        )
        bias = node.input[2] if len(node.input) > 2 else ""
        start = len(b.nodes)
        main = matmul_nbits(b, node.input[0], codes, scales, k, n, 4, zero, bias, accuracy_level)
        correction = b.op("MatMul", [sums(node.input[0], k), minima])
        b.op("Add", [main, correction], output=node.output[0])
        new_nodes.extend(b.nodes[start:])
    # the fp16 -> fp32 Casts read initializers only: put them first (topological order)
    casts = [n for n in b.nodes if n.op_type == "Cast"]
    still_read = {i for node in new_nodes for i in node.input} | {i for c in casts for i in c.input}
    keep = [t for t in graph.initializer if t.name not in stored or t.name in still_read]
    del graph.initializer[:]
    graph.initializer.extend(keep + b.initializers)
    del graph.node[:]
    graph.node.extend(casts + new_nodes)
    use_ms_domain(model)
    return decoded, report


def _packable(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> bool | None:
    if node.op_type not in ("MatMul", "Gemm") or node.name.startswith(SKIP_PREFIXES):
        return None
    for a in node.attribute if node.op_type == "Gemm" else []:
        if (a.name in ("transA", "transB") and a.i) or (a.name in ("alpha", "beta") and a.f != 1):
            return None
    name = node.input[1]
    if name not in inits or len(inits[name].dims) != 2 or inits[name].dims[0] % BLOCK:
        return None
    return True


def use_ms_domain(model: onnx.ModelProto) -> None:
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(MS_DOMAIN, 1))
