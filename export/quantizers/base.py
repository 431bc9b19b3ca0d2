"""`WeightQuantizer`: what one `--quantize` mode must say, as hooks into export/exporter.py.

The exporter calls, in this order (each default does nothing):

    body_path = q.quantize_body(body_path, stage)      torch's body graph, before loading
    report = q.quantize_weights(model, adapter, log)   the loaded body (onnx.ModelProto)
             (or q.pack_weights(...) for --runtime packed, when q.packs)
    ... embedding and head attached ...
    model = q.rewrite_file(model, model_path, save)    the whole file, before it is written
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    import onnx


@dataclass(frozen=True)
class WeightSpec:
    """What a calibrated quantizer (`calibrated`) is told: `--weight-bits` (average bits per
    weight of the body's matrices) and `--calib-text` (None: text the model generates)."""

    bits: float | None = None
    calib_text: str | None = None


class WeightQuantizer:
    name: ClassVar[str]
    help: ClassVar[str]  # one line for --help
    order: ClassVar[int] = 100  # position in --help
    # Activations are quantized at run time (dynamic int8): logits differ from PyTorch by
    # design, so the parity check reports the difference instead of failing on it.
    dynamic_activations: ClassVar[bool] = False
    # A TT table stores its cores as int8 too (EmbeddingMethod.int8_cores).
    int8_cores: ClassVar[bool] = False
    # Has a form that stays packed in the session (`--runtime packed`, `pack_weights`).
    packs: ClassVar[bool] = False
    # Runs the model on calibration text and takes --weight-bits: the exporter calls
    # `quantize_calibrated` instead of `quantize_weights`.
    calibrated: ClassVar[bool] = False

    def quantize_body(self, body_path: Path, stage: Path) -> Path:
        """The body graph to load: `body_path`, or a quantized copy written in `stage`."""
        return body_path

    def quantize_weights(self, model: onnx.ModelProto, adapter, log: Callable[[str], None]):
        """Rewrite the body's weights in place; a report for the manifest's
        `weight_quantization`, or None. PyTorch must then run the same weights (adapter)."""
        return None

    def validate(self, spec: WeightSpec) -> None:
        """Refuse settings this quantizer cannot meet, before the model loads (ValueError)."""

    def quantize_calibrated(
        self, model: onnx.ModelProto, adapter, tokenizer, spec: WeightSpec, log
    ) -> dict | None:
        """`quantize_weights` for a `calibrated` quantizer, with the tokenizer and settings."""
        raise NotImplementedError

    def pack_weights(self, model: onnx.ModelProto, adapter, log: Callable[[str], None]):
        """`--runtime packed` instead of `quantize_weights`: the same weights, kept packed in
        the session (onnxruntime MatMulNBits); only called when `packs` is True."""
        return None

    def rewrite_file(
        self, model: onnx.ModelProto, model_path: Path, save: Callable
    ) -> onnx.ModelProto:
        """The complete model to write at `model_path` (`save(model, path)` writes one)."""
        return model
