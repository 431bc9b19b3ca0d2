"""`--quantize q4`: transformer weights stored as 4-bit blocks, decoded once at session load.

Every MatMul/Gemm weight W (K, N) of the body (contraction axis K, a multiple of 32) becomes
llama.cpp's Q4_1 grid: per block of 32 along K and per output column, an fp16 scale d and an
fp16 minimum m, and codes q in 0..15, w ~ d * q + m: 5 bits per weight in the file. The codes
are packed as in a GGUF Q4_1 block: byte j (0..15) of a block holds element j in its low
nibble and element j + 16 in its high nibble, stored as a (K/32, 16, N) uint8 initializer.

The decode is BitwiseAnd, BitShift, Concat, Cast, Mul, Add and Reshape over initializers only,
so onnxruntime folds it when the session is created: the file is small, the session computes
in fp32 at the speed of the fp32 file (DequantizeLinear would not fold, and MatMulNBits needs
fp32 scales and zero points, 6 bits per weight, cannot hold d * q + m bit for bit and runs a
slow float-zero-point path).

Load-time memory: onnxruntime keeps every folded tensor until the whole constant-folding pass
is over, so the session's peak is about the sum of all decode outputs. With the GGUF nibble
order the two nibble planes are just concatenated along the block axis (no interleaving
Unsqueeze/Concat/Reshape on the codes) and the block parameters are stored already shaped
(K/32, 1, N): 18 bytes of folded outputs per weight instead of 20 (docs/quality_notes.md,
"Load-time memory").

When the source is a Q4_1 GGUF file, the dequantized weights already lie on this grid
(m is the block minimum, d = (max - min) / 15), so the grid is recovered exactly instead of
re-rounded: lossless against the dequantized weights. Other weights are rounded to nearest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from tensorgpt.export.graph_builder import GraphBuilder, nibbles
from tensorgpt.tt_ops.row_codecs import Q4_BLOCK as BLOCK
from tensorgpt.tt_ops.row_codecs import decode_q4_blocks, encode_q4_blocks_exact

SKIP_PREFIXES = ("embedding", "lm_head")  # the table has its own storage


def _decode_nodes(b: GraphBuilder, packed: str, scale: str, minimum: str, k: int, n: int) -> str:
    """(K/32, 16, N) codes, (K/32, 1, N) fp16 scale and minimum -> (K, N) float weight.

    Every output here is folded and held until the folding pass ends: one uint8 pass per
    nibble plane, one uint8 concat, then the four fp32 tensors that cannot be avoided (Cast,
    Mul, Add, and the Reshape that drops the block axis the scales broadcast over)."""
    low, high = nibbles(b, packed)  # elements j and j + 16 of each block
    q = b.op("Cast", [b.op("Concat", [low, high], axis=1)], to=1)  # (K/32, 32, N)
    d = b.op("Cast", [scale], to=1)
    m = b.op("Cast", [minimum], to=1)
    w = b.op("Add", [b.op("Mul", [q, d]), m])
    return b.op("Reshape", [w, b.ints(f"weight_{k}x{n}", [k, n])])


@dataclass(frozen=True)
class BlockCodec:
    """One block format for `quantize_weights_q4`'s loop: `encode` (K, N) float32 ->
    ({initializer suffix: stored array}, the decoded (K, N) float32, exact (K/32, N) bool);
    `decode` (builder, the initializers' names in that order, K, N) -> the (K, N) output."""

    encode: Callable[[np.ndarray], tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]]
    decode: Callable[[GraphBuilder, list[str], int, int], str]


def _encode_q4(w: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    packed, scale, minimum, exact = encode_q4_blocks_exact(w)
    parts = {"q4": packed, "scale": scale[:, None, :], "min": minimum[:, None, :]}
    return parts, decode_q4_blocks(packed, scale, minimum), exact


Q4_CODEC = BlockCodec(_encode_q4, lambda b, names, k, n: _decode_nodes(b, *names, k, n))


def weight_key(w: np.ndarray) -> str:
    """Content hash that finds a graph weight again among the torch parameters."""
    w = np.ascontiguousarray(w, dtype=np.float32)
    return hashlib.sha256(w.tobytes() + str(w.shape).encode()).hexdigest()


def quantize_weights_q4(
    model: onnx.ModelProto,
    deferred: dict | None = None,
    keep_decoded: dict | None = None,
    codec: BlockCodec = Q4_CODEC,
) -> tuple[dict[str, np.ndarray], dict]:
    """Rewrite the body's MatMul/Gemm weights in place.

    Returns {weight_key(original (K, N)): decoded (K, N)} so PyTorch can run the same weights,
    and a report: weights and parameters converted, and how many were already on the grid.

    deferred: {initializer name: Deferred} of a streaming export (export/lazy_body.py). Such a
    weight is not read here: its codes, scales and minima become Deferred too, encoded when
    the file is written (one weight in memory at a time); the report's counts and `tensors`
    (keyed by parameter name) fill in then, and its decoded values go to `keep_decoded` (when
    given: a parity check on a few layers), keyed by parameter name in the parameter's layout.

    codec: the block format (q4 by default; `--quantize q3` passes its own, export/quantizers/
    q3.py); a streaming export (`deferred`) writes q4 only.
    """
    deferred = {} if deferred is None else deferred
    if deferred and codec is not Q4_CODEC:
        raise ValueError("a streaming export writes q4 blocks only")
    inits = {t.name: t for t in model.graph.initializer}
    b = GraphBuilder("q4")
    decoded: dict[str, np.ndarray] = {}
    replaced: dict[str, str] = {}
    report = {"weights": 0, "params": 0, "exact_weights": 0, "max_rel_change": 0.0, "tensors": {}}
    for node in model.graph.node:
        if node.op_type not in ("MatMul", "Gemm") or node.name.startswith(SKIP_PREFIXES):
            continue
        if node.op_type == "Gemm" and any(
            a.name in ("transB", "transA") and a.i for a in node.attribute
        ):
            continue
        name = node.input[1]
        if name in replaced:
            node.input[1] = replaced[name]
            continue
        if name not in inits or len(inits[name].dims) != 2 or inits[name].dims[0] % BLOCK:
            continue
        k, n = inits[name].dims
        tag = f"w{len(replaced)}"
        if name in deferred:
            parts = _deferred_blocks(deferred.pop(name), report, keep_decoded)
            shapes = [(k // BLOCK, BLOCK // 2, n), (k // BLOCK, 1, n), (k // BLOCK, 1, n)]
            dtypes = [np.uint8, np.float16, np.float16]
            names = []
            for suffix, shape, dtype, part in zip(("q4", "scale", "min"), shapes, dtypes, parts):
                names.append(b.placeholder(f"{tag}.{suffix}", shape, dtype))
                deferred[names[-1]] = part
            out = _decode_nodes(b, *names, k, n)
        else:
            w = numpy_helper.to_array(inits[name]).astype(np.float32)
            parts, back, exact = codec.encode(w)
            out = codec.decode(b, [b.const(f"{tag}.{s}", a) for s, a in parts.items()], k, n)
            decoded[weight_key(w)] = back
            _account(report, weight_key(w), w, back, exact)
        replaced[name] = out
        node.input[1] = out
    still_read = {i for node in model.graph.node for i in node.input}
    keep = [t for t in model.graph.initializer if t.name not in replaced or t.name in still_read]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep + b.initializers)
    # decode nodes first: they only read initializers, so this order is topological
    body = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(b.nodes + body)
    return decoded, report


def _account(report: dict, key: str, w: np.ndarray, back: np.ndarray, exact: np.ndarray) -> None:
    """Count one converted weight in the report."""
    k, n = w.shape
    change = float(np.abs(back - w).max() / max(float(np.abs(w).max()), 1e-30))
    report["weights"] += 1
    report["params"] += w.size
    report["exact_weights"] += int(change <= 1e-6)
    report["max_rel_change"] = max(report["max_rel_change"], change)
    report["tensors"][key] = {
        "shape": [k, n],
        "exact_blocks": round(float(exact.mean()), 6),
        "rel_rms_error": float(np.sqrt(np.mean((back - w) ** 2) / max(np.mean(w**2), 1e-30))),
    }


def _deferred_blocks(source, report: dict, decoded: dict | None) -> list:
    """Three Deferred reads (codes, scales, minima) sharing one encode of `source`: the file
    writes them one after the other, so the encode is kept only until all three are read.
    `decoded` (a small model's parity check) also collects the decoded weight, by name."""
    from tensorgpt.export.stream_write import Deferred

    cache: dict[int, np.ndarray] = {}

    def part(i: int):
        def read() -> np.ndarray:
            if not cache:
                w = source.read()
                packed, scale, minimum, exact = encode_q4_blocks_exact(w)
                back = decode_q4_blocks(packed, scale, minimum)
                _account(report, source.source, w, back, exact)
                if decoded is not None:  # in the parameter's own layout
                    decoded[source.source] = back.T if source.transposed else back
                cache.update({0: packed, 1: scale[:, None, :], 2: minimum[:, None, :]})
            values = cache.pop(i)
            return values

        return read

    return [Deferred(part(i), source.source) for i in range(3)]


def load_decoded_into_torch(module, decoded: dict[str, np.ndarray]) -> dict[str, str]:
    """Give each torch weight the values the graph now decodes; returns {parameter name:
    weight_key} for the ones matched (names the report's tensors)."""
    import torch

    matched = {}
    for name, param in module.named_parameters():
        if param.dim() != 2:
            continue
        w = param.detach().float().numpy()
        if (key := weight_key(w)) in decoded:
            param.data = torch.from_numpy(decoded[key].copy())
        elif (key := weight_key(w.T)) in decoded:
            param.data = torch.from_numpy(np.ascontiguousarray(decoded[key].T))
        else:
            continue
        matched[name] = key
    return matched
