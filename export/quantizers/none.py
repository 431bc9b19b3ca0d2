"""--quantize none: fp32 weights (default)."""

from __future__ import annotations

from tensorgpt.export.quantizers import register
from tensorgpt.export.quantizers.base import WeightQuantizer


@register
class NoQuantization(WeightQuantizer):
    name = "none"
    help = "fp32 weights (default)"
    order = 0
