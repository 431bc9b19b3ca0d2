"""Scalar codecs for tables and weight matrices (numpy): the baselines' int8 / int4 rows, the
int8 TT cores, and the Q4_1 blocks of `--quantize q4`. The ONNX graphs that decode them live
in export/ (embedding_graph.py, weight_blocks.py) and must do the same arithmetic.
"""

from __future__ import annotations

import numpy as np

INT4_BLOCK = 32  # columns per fp16 scale in int4 rows (llama.cpp Q4_0 / onnxruntime block-32)
Q4_BLOCK = 32  # rows of K per Q4_1 block


def quantize_int8(x: np.ndarray, reduce_axes: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric absmax int8 over `reduce_axes`: codes int8 (shape of x), scales float16
    (x's shape with the reduced axes kept as 1); x ~ codes * scale."""
    absmax = np.max(np.abs(x), axis=reduce_axes, keepdims=True)
    scale = (absmax / 127.0).astype(np.float16)
    safe = np.where(scale == 0, np.float16(1), scale).astype(np.float32)
    codes = np.clip(np.rint(x / safe), -127, 127).astype(np.int8)
    return codes, scale


def dequantize_int8(codes: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return codes.astype(np.float32) * scale.astype(np.float32)


def int8_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per row: codes (K, D) and the float row scales (absmax / 127; 1 for a
    zero row), x ~ codes * scale[:, None].  The scales are folded into `scale`, not stored."""
    row_scale = np.abs(x).max(1) / 127.0
    row_scale[row_scale == 0] = 1.0
    return np.clip(np.round(x / row_scale[:, None]), -127, 127).astype(np.int8), row_scale


def quantize_int4_blocks(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(V, D) float -> codes (V, D/2) uint8 and scales (V, D/32) float16.

    Codes in [-8, 7] are stored +8, two per byte, column 2i in the low nibble and 2i+1 in
    the high one; one absmax / 7 scale per block of 32 columns.
    """
    vocab, dim = table.shape
    if dim % INT4_BLOCK:
        raise ValueError(f"int4 rows need a hidden size divisible by {INT4_BLOCK}, got {dim}")
    blocks = table.reshape(vocab, dim // INT4_BLOCK, INT4_BLOCK)
    absmax = np.abs(blocks).max(axis=2, keepdims=True)
    scale = (absmax / 7.0).astype(np.float16)
    safe = np.where(scale == 0, np.float16(1), scale).astype(np.float32)
    q = np.clip(np.rint(blocks / safe), -8, 7).astype(np.int16).reshape(vocab, dim) + 8
    codes = (q[:, 0::2] | (q[:, 1::2] << 4)).astype(np.uint8)
    return codes, scale[:, :, 0]


def dequantize_int4_blocks(codes: np.ndarray, scale: np.ndarray) -> np.ndarray:
    vocab, dim = codes.shape[0], codes.shape[1] * 2
    q = np.empty((vocab, dim), np.float32)
    q[:, 0::2] = (codes & 15).astype(np.float32) - 8
    q[:, 1::2] = (codes >> 4).astype(np.float32) - 8
    blocks = q.reshape(vocab, -1, INT4_BLOCK) * scale.astype(np.float32)[:, :, None]
    return blocks.reshape(vocab, dim)


def encode_q4_blocks(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(K, N) float -> packed codes (K/32, 16, N) uint8 (GGUF nibble order), scale and
    minimum (K/32, N) float16: llama.cpp's Q4_1 grid, w ~ d * q + m with q in 0..15."""
    k, n = w.shape
    blocks = w.reshape(k // Q4_BLOCK, Q4_BLOCK, n).astype(np.float32)
    low, high = blocks.min(axis=1), blocks.max(axis=1)
    scale = ((high - low) / 15.0).astype(np.float16)
    minimum = low.astype(np.float16)
    d = scale.astype(np.float32)[:, None, :]
    safe = np.where(d == 0, 1.0, d)
    q = np.clip(np.rint((blocks - minimum.astype(np.float32)[:, None, :]) / safe), 0, 15)
    q = q.astype(np.uint8)
    half = Q4_BLOCK // 2
    return (q[:, :half] | (q[:, half:] << 4)).astype(np.uint8), scale, minimum


def decode_q4_blocks(packed: np.ndarray, scale: np.ndarray, minimum: np.ndarray) -> np.ndarray:
    """The exact arithmetic of the ONNX decode: float(q) * float(d) + float(m), (K, N)."""
    nb, _, n = packed.shape
    q = np.concatenate([packed & 15, packed >> 4], axis=1).astype(np.float32)
    blocks = q * scale.astype(np.float32)[:, None, :]
    return (blocks + minimum.astype(np.float32)[:, None, :]).reshape(nb * Q4_BLOCK, n)
