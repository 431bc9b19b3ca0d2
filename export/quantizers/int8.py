"""--quantize int8: onnxruntime dynamic int8 for the transformer MatMuls, int8 TT cores."""

from __future__ import annotations

from pathlib import Path

from tensorgpt.export.quantizers import register
from tensorgpt.export.quantizers.base import WeightQuantizer


@register
class Int8MatMuls(WeightQuantizer):
    name = "int8"
    help = "onnxruntime dynamic int8 for the transformer MatMuls and int8 TT cores"
    order = 10
    dynamic_activations = True
    int8_cores = True

    def quantize_body(self, body_path: Path, stage: Path) -> Path:
        """Quantize the body graph alone, before the embedding and head are attached.

        Done on the body because quantize_dynamic mishandles an initializer shared by two
        nodes (the tied table feeds the Gather and the head): it quantizes the head's copy and
        drops the float table the Gather still reads, whatever nodes_to_exclude says.
        """
        from onnxruntime.quantization import QuantType, quantize_dynamic

        dst = stage / (body_path.stem + ".int8.onnx")
        quantize_dynamic(
            str(body_path),
            str(dst),
            op_types_to_quantize=["MatMul", "Gemm"],
            weight_type=QuantType.QInt8,
            per_channel=False,
        )
        return dst
