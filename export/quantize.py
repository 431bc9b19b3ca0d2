"""`--quantize int8`: onnxruntime's dynamic int8 quantization of the transformer MatMuls.

The embedding chain and the LM head are left alone: their weights are the compressed table,
which has its own int8 storage (see embedding_graph.py), and quantizing the head's Gemm would
make onnxruntime dequantize the whole table at every forward.
"""

from __future__ import annotations

from pathlib import Path

import onnx


def quantize_body_int8(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(src), load_external_data=False)
    keep = [n.name for n in model.graph.node if n.name.startswith(("embedding/", "lm_head/"))]
    quantize_dynamic(
        str(src),
        str(dst),
        op_types_to_quantize=["MatMul", "Gemm"],
        nodes_to_exclude=keep,
        weight_type=QuantType.QInt8,
        per_channel=False,
    )
