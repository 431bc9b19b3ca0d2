"""--quantize q4 keeps a Q4_0 / Q4_1 source grid bit for bit and says where it re-rounds."""

from __future__ import annotations

import numpy as np
import pytest

from tensorgpt.export.q4_source import rerounded_lines
from tensorgpt.tt_ops.row_codecs import decode_q4_blocks, encode_q4_blocks_exact

gguf = pytest.importorskip("gguf")


def _dequantized(kind: str, seed: int = 0) -> np.ndarray:
    """A (K, N) matrix as transformers hands it over after dequantizing a GGUF tensor
    stored (N, K) row-major in `kind` blocks."""
    from gguf import GGMLQuantizationType, quants

    w = np.random.default_rng(seed).standard_normal((48, 256)).astype(np.float32)
    kind = GGMLQuantizationType[kind]
    return np.ascontiguousarray(quants.dequantize(quants.quantize(w, kind), kind).T)


def _dequantized_k_quant(kind: str, seed: int = 0) -> np.ndarray:
    """As _dequantized, for a K-quant gguf-py can read but not write: random blocks (codes and
    6-bit sub-scales) with a sane fp16 super-block scale, dequantized by gguf-py."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, quants

    kind = GGMLQuantizationType[kind]
    block, size = GGML_QUANT_SIZES[kind]
    raw = np.random.default_rng(seed).integers(0, 256, (48 * 256 // block, size), dtype=np.uint8)
    scale = np.frombuffer(np.float16(0.01).tobytes(), np.uint8)
    # where each block keeps its fp16 scales: Q4_K d and dmin first, Q6_K d last
    for at in {"Q4_K": (0, 2), "Q6_K": (size - 2,)}[kind.name]:
        raw[:, at : at + 2] = scale
    return np.ascontiguousarray(quants.dequantize(raw.reshape(48, -1), kind).T)


@pytest.mark.parametrize("kind", ["Q4_0", "Q4_1"])
def test_four_bit_sources_are_kept_exactly(kind):
    w = _dequantized(kind)
    packed, scale, minimum, exact = encode_q4_blocks_exact(w)
    assert exact.all()
    assert np.array_equal(decode_q4_blocks(packed, scale, minimum), w)


@pytest.mark.parametrize("kind", ["Q5_0", "Q8_0"])
def test_finer_sources_are_re_rounded_and_said(kind):
    w = _dequantized(kind)
    packed, scale, minimum, exact = encode_q4_blocks_exact(w)
    assert not exact.any()
    back = decode_q4_blocks(packed, scale, minimum)
    rel = float(np.sqrt(np.mean((back - w) ** 2) / np.mean(w**2)))
    assert 0 < rel < 0.2  # 16 levels over each block's range
    report = {
        "source_is_gguf": True,
        "tensors": {
            "layer.w": {"exact_blocks": 0.0, "rel_rms_error": rel},
            "ok": {"exact_blocks": 1.0, "rel_rms_error": 0.0},
        },
    }
    (line,) = rerounded_lines(report)
    assert "layer.w re-rounded" in line and f"{rel:.2e}" in line


def test_fp32_weights_round_to_nearest_as_before():
    w = np.random.default_rng(1).standard_normal((64, 8)).astype(np.float32)
    packed, scale, minimum, exact = encode_q4_blocks_exact(w)
    assert not exact.any()
    back = decode_q4_blocks(packed, scale, minimum)
    step = scale.astype(np.float32).repeat(32, axis=0)
    assert (np.abs(back - w) <= 0.5 * step + 1e-3 * np.abs(w).max()).all()


@pytest.mark.parametrize("kind", ["Q4_K", "Q6_K"])
def test_k_quant_sources_are_re_rounded_with_their_error(kind):
    """Q4_K's sub-block scale (6-bit x fp16) rarely fits fp16; Q6_K has 64 levels: rounded to
    nearest on the 4-bit grid, the error stays that of 16 levels over each block's range."""
    w = _dequantized_k_quant(kind)
    packed, scale, minimum, exact = encode_q4_blocks_exact(w)
    assert exact.mean() < 0.1, exact.mean()
    back = decode_q4_blocks(packed, scale, minimum)
    rel = float(np.sqrt(np.mean((back - w) ** 2) / np.mean(w**2)))
    assert 0 < rel < 0.2, rel
