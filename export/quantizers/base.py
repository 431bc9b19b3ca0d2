"""`WeightQuantizer`: what one `--quantize` mode must say, as hooks into export/exporter.py.

The exporter calls, in this order (each default does nothing):

    body_path = q.quantize_body(body_path, stage)      torch's body graph, before loading
    report = q.quantize_weights(model, adapter, log)   the loaded body (onnx.ModelProto)
    ... embedding and head attached ...
    model = q.rewrite_file(model, model_path, save)    the whole file, before it is written
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    import onnx


class WeightQuantizer:
    name: ClassVar[str]
    help: ClassVar[str]  # one line for --help
    order: ClassVar[int] = 100  # position in --help
    # Activations are quantized at run time (dynamic int8): logits differ from PyTorch by
    # design, so the parity check reports the difference instead of failing on it.
    dynamic_activations: ClassVar[bool] = False
    # A TT table stores its cores as int8 too (EmbeddingMethod.int8_cores).
    int8_cores: ClassVar[bool] = False

    def quantize_body(self, body_path: Path, stage: Path) -> Path:
        """The body graph to load: `body_path`, or a quantized copy written in `stage`."""
        return body_path

    def quantize_weights(self, model: onnx.ModelProto, adapter, log: Callable[[str], None]):
        """Rewrite the body's weights in place; a report for the manifest's
        `weight_quantization`, or None. PyTorch must then run the same weights (adapter)."""
        return None

    def rewrite_file(
        self, model: onnx.ModelProto, model_path: Path, save: Callable
    ) -> onnx.ModelProto:
        """The complete model to write at `model_path` (`save(model, path)` writes one)."""
        return model
