"""`--runtime packed`: the token table held once, 8-bit, for both the lookup and the tied head.

The portable graph gives the tied head a (V, D) fp32 table (the dense initializer, or a
compressed table's rebuild folded at load): 113 MB for SmolLM2's 49152 x 576, read in full at
every decoded token. Here the table is one Q8_0-grid tensor, the GGUF format of SmolLM2's own
token_embd: per block of 32 along D, an fp16 scale d = absmax / 127 and codes q in -127..127,
t = d * q; stored as uint8 q + 128 (MatMulNBits' default 8-bit zero point), (V, D/32, 32).

    lookup: Gather(codes, ids) -> Cast, - 128, * Gather(scales, ids)   (only the batch's rows)
    head:   MatMulNBits(hidden; codes, scales, bits 8)                 (N = V, K = D)

Both read the same initializers. Rule for the precision: 8 bits is what llama.cpp ships for
this table and what a Q8_0 GGUF source holds exactly (lossless then); a 4-bit table would
halve its RAM but is not measured yet (docs/device.md).

Where the table comes from:
- a dense table (method none): quantized at export, the file holds the codes (V*D bytes);
- a compressed table (tt, tc, rows, svd): its rebuild subgraph feeds an in-graph quantizer
  (Reshape, Abs, ReduceMax, Div, Round, Clip, Add, Cast) over initializers only, so the codes
  are computed once at load (folded, or run by the split loader) and the file keeps only the
  compressed form. Rows are decoded and quantized in chunks (`EmbeddingGraph.table_rows`,
  CHUNK_BYTES), then the uint8 chunks concatenated: the split loader runs them in order and
  frees each chunk's float intermediates before the next (docs/device.md, load peak).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from tensorgpt.export.embedding_graph import DenseEmbedding, EmbeddingGraph
from tensorgpt.export.graph_builder import GraphBuilder
from tensorgpt.export.packed.graph_walk import nodes_feeding
from tensorgpt.export.packed.weights import BLOCK, matmul_nbits

HEAD_BITS = 8
# onnxruntime's only fast 8-bit MatMulNBits CPU kernel takes int8 activations; at level 1 the
# head dequantizes the whole table on every call (ten times slower, docs/device.md).
HEAD_ACCURACY_LEVEL = 4
_OFFSET = 128  # uint8 zero point of the 8-bit codes
# A compressed table is decoded and quantized at load in chunks of rows of at most this many
# float32 bytes, so the load never holds a (V, D) float table (and its Abs, Div, Round ...
# copies): SmolLM2's 49152 x 576 table is 113 MB in float32, its codes 28 MB.
CHUNK_BYTES = 8 << 20
FLOAT16 = onnx.TensorProto.FLOAT16
FLOAT = onnx.TensorProto.FLOAT
UINT8 = onnx.TensorProto.UINT8


def encode_q8_blocks(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(V, D) float -> codes (V, D/32, 32) uint8 (q + 128) and scales (V, D/32) float16."""
    v, d = table.shape
    blocks = table.reshape(v, d // BLOCK, BLOCK).astype(np.float32)
    scale = (np.abs(blocks).max(axis=-1) / 127.0).astype(np.float16)
    safe = np.where(scale == 0, 1.0, scale.astype(np.float32))[..., None]
    q = np.clip(np.rint(blocks / safe), -127, 127)
    return (q + _OFFSET).astype(np.uint8), scale


def decode_q8_blocks(codes: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """The lookup's arithmetic: (float(codes) - 128) * float(scale), (V, D)."""
    v, nb, _ = codes.shape
    t = (codes.astype(np.float32) - _OFFSET) * scale.astype(np.float32)[..., None]
    return t.reshape(v, nb * BLOCK)


class PackedTable:
    """The 8-bit table of `embedding`, as graph tensors shared by lookup and head."""

    def __init__(self, embedding: EmbeddingGraph) -> None:
        if embedding.dim % BLOCK:
            raise ValueError(
                f"--runtime packed needs the hidden size to be a multiple of {BLOCK}, "
                f"got {embedding.dim}"
            )
        self.embedding = embedding
        self.vocab_size, self.dim = embedding.vocab_size, embedding.dim
        self._tensors: tuple[str, str] | None = None

    def dense(self, model_path: str | Path | None = None) -> np.ndarray:
        """The (V, D) table the graph computes with, for PyTorch's parity run.

        A compressed table is quantized inside the graph at load: its codes then come from
        running that subgraph of the written `model_path` in onnxruntime, because numpy's
        rebuild of the table differs in the last float bits and `Round` flips a few codes
        (SmolLM2 tc: a 0.11 logit difference that is not the packing's)."""
        if isinstance(self.embedding, DenseEmbedding) or model_path is None:
            return decode_q8_blocks(*encode_q8_blocks(self.embedding.decoded()))
        codes, scales = _run_table_subgraph(Path(model_path), *self._tensors)
        return decode_q8_blocks(codes, scales)

    def tensors(self, b: GraphBuilder) -> tuple[str, str]:
        """(codes (V, D/32, 32) uint8, scales (V, D/32) float32), built once."""
        if self._tensors is None:
            if isinstance(self.embedding, DenseEmbedding):
                codes, scale = encode_q8_blocks(self.embedding.weight)
                self._tensors = (
                    b.const("q8.codes", codes),
                    b.op("Cast", [b.const("q8.scale", scale)], to=FLOAT),
                )
            else:
                self._tensors = _quantize_chunks(b, self.embedding, self.vocab_size, self.dim)
        return self._tensors

    def rows(self, b: GraphBuilder, ids: str) -> str:
        """ids (batch, seq) -> rows (batch, seq, D), decoding only those rows."""
        codes, scales = self.tensors(b)
        q = b.op("Cast", [b.op("Gather", [codes, ids], axis=0)], to=FLOAT)  # (b, s, D/32, 32)
        q = b.op("Sub", [q, b.const("q8.offset", np.array(_OFFSET, np.float32))])
        d = b.op("Unsqueeze", [b.op("Gather", [scales, ids], axis=0), b.ints("last", [-1])])
        return b.op("Reshape", [b.op("Mul", [q, d]), b.ints("rows_shape", [0, 0, self.dim])])

    def head(self, b: GraphBuilder, hidden: str, bias: str = "") -> str:
        """hidden (..., D) -> logits (..., V) by 8-bit MatMulNBits over the same codes."""
        codes, scales = self.tensors(b)
        return matmul_nbits(
            b,
            hidden,
            codes,
            scales,
            self.dim,
            self.vocab_size,
            HEAD_BITS,
            bias=bias,
            accuracy_level=HEAD_ACCURACY_LEVEL,
        )


def chunk_spans(vocab: int, dim: int) -> list[tuple[int, int]]:
    """Row ranges [start, stop) of at most CHUNK_BYTES of float32 rows each (at least 1 row)."""
    step = max(1, CHUNK_BYTES // (4 * dim))
    return [(start, min(start + step, vocab)) for start in range(0, vocab, step)]


def _quantize_chunks(
    b: GraphBuilder, embedding: EmbeddingGraph, vocab: int, dim: int
) -> tuple[str, str]:
    """The compressed table's rows, chunk by chunk, each quantized as soon as it is decoded;
    then the uint8 codes and scales of all chunks concatenated."""
    parts: list[tuple[str, str]] = []
    for start, stop in chunk_spans(vocab, dim):
        after = parts[-1][0] if parts else ""  # one chunk at a time (embedding_graph.wait_for)
        rows = embedding.table_rows(b, start, stop, after)
        parts.append(_quantize_in_graph(b, rows, stop - start, dim))
    if len(parts) == 1:
        return parts[0]
    return (
        b.op("Concat", [codes for codes, _ in parts], axis=0),
        b.op("Concat", [scales for _, scales in parts], axis=0),
    )


def _quantize_in_graph(b: GraphBuilder, table: str, vocab: int, dim: int) -> tuple[str, str]:
    """encode_q8_blocks as ONNX ops (initializer-only: computed once at load)."""
    blocks = b.op("Reshape", [table, b.ints("q8.blocks", [vocab, dim // BLOCK, BLOCK])])
    absmax = b.op("ReduceMax", [b.op("Abs", [blocks]), b.ints("last", [-1])], keepdims=1)
    scale16 = b.op(
        "Cast", [b.op("Div", [absmax, b.const("q8.127", np.array(127, np.float32))])], to=FLOAT16
    )
    scale = b.op("Cast", [scale16], to=FLOAT)  # (V, D/32, 1), the fp16 grid as in encode_q8_blocks
    zero = b.op("Equal", [scale, b.const("q8.zero", np.array(0, np.float32))])
    safe = b.op("Where", [zero, b.const("q8.one", np.array(1, np.float32)), scale])
    q = b.op("Round", [b.op("Div", [blocks, safe])])
    q = b.op(
        "Clip",
        [
            q,
            b.const("q8.lo", np.array(-127, np.float32)),
            b.const("q8.hi", np.array(127, np.float32)),
        ],
    )
    codes = b.op(
        "Cast", [b.op("Add", [q, b.const("q8.offset", np.array(_OFFSET, np.float32))])], to=UINT8
    )
    flat = b.op("Reshape", [scale, b.ints("q8.scale_shape", [vocab, dim // BLOCK])])
    return codes, flat


def _run_table_subgraph(model_path: Path, codes: str, scales: str) -> tuple[np.ndarray, np.ndarray]:
    """Evaluate the initializer-only nodes behind `codes` and `scales` in onnxruntime."""
    import onnxruntime as ort

    model = onnx.load(str(model_path))
    order = nodes_feeding(model.graph.node, [codes, scales])  # the file's topological order
    read = {i for n in order for i in n.input}
    graph = helper.make_graph(
        order,
        "packed_table",
        [],
        [
            helper.make_tensor_value_info(codes, UINT8, None),
            helper.make_tensor_value_info(scales, FLOAT, None),
        ],
        [t for t in model.graph.initializer if t.name in read],
    )
    sub = helper.make_model(graph, opset_imports=model.opset_import)
    del model
    session = ort.InferenceSession(sub.SerializeToString(), providers=["CPUExecutionProvider"])
    got_codes, got_scales = session.run(None, {})
    return got_codes, got_scales
