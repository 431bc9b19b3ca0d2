"""`--quantize`: onnxruntime's dynamic int8 quantization.

int8: the transformer MatMuls only, quantized in the body graph before the embedding and the
head are attached, so the table keeps its own storage.
ort-int8: onnxruntime's stock `quantize_dynamic` over the whole file with default settings,
the baseline a user gets from onnxruntime's own docs (it also quantizes the tied head, which
then gets dequantized at every forward).

"""

from __future__ import annotations

from pathlib import Path

import onnx


def quantize_body_int8(src: Path, dst: Path) -> None:
    """Quantize the body graph alone, before the embedding and head are attached.

    Done on the body because quantize_dynamic mishandles an initializer shared by two nodes
    (the tied table feeds the Gather and the head): it quantizes the head's copy and drops
    the float table the Gather still reads, whatever nodes_to_exclude says.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(src),
        str(dst),
        op_types_to_quantize=["MatMul", "Gemm"],
        weight_type=QuantType.QInt8,
        per_channel=False,
    )


def quantize_all_int8(src: Path, dst: Path) -> None:
    """Stock quantize_dynamic, after giving a tied head its own (D, V) weight.

    The stock quantizer rewrites an initializer shared by the embedding Gather and the head's
    Gemm(transB=1) into a shape that no longer fits the Gather. A plain HF -> ONNX export (what
    this baseline stands for) has the head as MatMul with its own transposed weight anyway.
    """
    from onnxruntime.quantization import quantize_dynamic

    model = onnx.load(str(src))
    _untie_head(model)
    untied = dst.with_name(dst.stem + ".untied.onnx")
    onnx.save_model(model, str(untied))
    try:
        quantize_dynamic(str(untied), str(dst))
    finally:
        untied.unlink(missing_ok=True)


def _untie_head(model: onnx.ModelProto) -> None:
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Gemm" and node.name.startswith("lm_head/") and node.input[1] in inits:
            table = numpy_helper.to_array(inits[node.input[1]])
            weight = numpy_helper.from_array(table.T.copy(), "lm_head.weight_transposed")
            model.graph.initializer.append(weight)
            node.input[1] = weight.name
            del node.attribute[:]
            node.attribute.append(onnx.helper.make_attribute("transB", 0))
