"""--quantize ort-int8: onnxruntime's stock `quantize_dynamic` of the whole file, with default
settings: the baseline a user gets from onnxruntime's own docs (it also quantizes the tied
head, which then gets dequantized at every forward)."""

from __future__ import annotations

from pathlib import Path

from tensorgpt.export.quantizers import register
from tensorgpt.export.quantizers.base import WeightQuantizer


@register
class OrtInt8(WeightQuantizer):
    name = "ort-int8"
    help = "onnxruntime's stock quantize_dynamic of the whole file (a baseline)"
    order = 20
    dynamic_activations = True

    def rewrite_file(self, model, model_path: Path, save):
        """Stock quantize_dynamic, after giving a tied head its own (D, V) weight.

        The stock quantizer rewrites an initializer shared by the embedding Gather and the
        head's Gemm(transB=1) into a shape that no longer fits the Gather. A plain HF -> ONNX
        export (what this baseline stands for) has the head as MatMul with its own transposed
        weight anyway.
        """
        import onnx
        from onnxruntime.quantization import quantize_dynamic

        fp32_path = model_path.with_name("fp32.onnx")
        save(model, fp32_path)
        model = onnx.load(str(fp32_path))
        _untie_head(model)
        untied = model_path.with_name(model_path.stem + ".untied.onnx")
        onnx.save_model(model, str(untied))
        try:
            quantize_dynamic(str(untied), str(model_path))
        finally:
            untied.unlink(missing_ok=True)
        fp32_path.unlink()
        return onnx.load(str(model_path))


def _untie_head(model) -> None:
    import onnx
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
