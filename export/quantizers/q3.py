"""--quantize q3: transformer weights as 3-bit blocks of 32 with fp16 scale and minimum (4.0
bits per weight against q4's 5.0; codec and layout: tt_ops/q3_blocks.py, our own, not
llama.cpp's Q3_K), decoded once at session load like q4 (export/weight_blocks.py). The baseline
the factored linear layers are measured against at equal bytes (issue 15)."""

from __future__ import annotations

import numpy as np

from tensorgpt.export.quantizers import register
from tensorgpt.export.quantizers.base import WeightQuantizer


def _encode(w: np.ndarray):
    from tensorgpt.tt_ops.q3_blocks import decode_q3_blocks, encode_q3_blocks

    low, high, scale, minimum = encode_q3_blocks(w)
    back = decode_q3_blocks(low, high, scale, minimum)
    parts = {"q3lo": low, "q3hi": high, "scale": scale[:, None, :], "min": minimum[:, None, :]}
    k, n = w.shape
    return parts, back, (back == w).reshape(k // 32, 32, n).all(axis=1)


def decode_q3_nodes(b, names: list[str], k: int, n: int, block: int = 32) -> str:
    """low (K/32, 8, N), high (K/32, 4, N) uint8 planes, (K/block, 1, N) fp16 scale and
    minimum -> (K, N) float: element j + 8 s of a block is bits 2s..2s+1 of low byte j plus 4
    times bit t of high byte i for j + 8 s = i + 4 t (tt_ops/q3_blocks.py); a block of 64 or
    128 (--quantize mixed) is that many codes under one scale. Folded at load."""
    low, high, scale, minimum = names

    def planes(packed: str, count: int, bits: int) -> str:
        mask = b.const(f"q3_mask{bits}", np.array((1 << bits) - 1, np.uint8))
        out = []
        for s in range(count):
            shifted = packed
            if s:
                shift = b.const(f"q3_shift{bits * s}", np.array(bits * s, np.uint8))
                shifted = b.op("BitShift", [packed, shift], direction="RIGHT")
            out.append(b.op("BitwiseAnd", [shifted, mask]))
        return b.op("Concat", out, axis=1)  # (K/32, 32, N)

    two = b.const("q3_two", np.array(2, np.uint8))
    top = b.op("BitShift", [planes(high, 8, 1), two], direction="LEFT")
    q = b.op("Cast", [b.op("BitwiseOr", [planes(low, 4, 2), top])], to=1)
    if block != 32:
        q = b.op("Reshape", [q, b.ints(f"q3_blocks{block}x{k}x{n}", [k // block, block, n])])
    w = b.op("Add", [b.op("Mul", [q, b.op("Cast", [scale], to=1)]), b.op("Cast", [minimum], to=1)])
    return b.op("Reshape", [w, b.ints(f"weight_{k}x{n}", [k, n])])


@register
class Q3Blocks(WeightQuantizer):
    name = "q3"
    help = (
        "weights as 3-bit blocks of 32 with fp16 scale and minimum (4.0 bits per weight, "
        "our own layout, not llama.cpp Q3_K), decoded once at session load"
    )
    order = 35

    def quantize_weights(self, model, adapter, log):
        from tensorgpt.export.q4_source import name_tensors
        from tensorgpt.export.weight_blocks import (
            BlockCodec,
            load_decoded_into_torch,
            quantize_weights_q4,
        )

        decoded, report = quantize_weights_q4(model, codec=BlockCodec(_encode, decode_q3_nodes))
        # PyTorch runs the same 3-bit weights, so the parity check stays strict
        name_tensors(report, load_decoded_into_torch(adapter.decoder_body(), decoded))
        del decoded
        report["format"] = "q3"
        log(f"q3 weights: {report['weights']} matrices")
        return report
