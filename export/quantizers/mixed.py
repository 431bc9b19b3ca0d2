"""--quantize mixed: each body matrix as 4-bit blocks of 32 (q4, 5.0 bits per weight), 3-bit
blocks of 32 (q3, 4.0) or 3-bit blocks of 64 (3.5), chosen under `--weight-bits B` (the
matrices' average) by the loss each format is estimated to add, each quantized by GPTQ on
calibration text (the plan: export/mixed_weights.py). The file holds the same decode ops as
q4 and q3 (folded at session load); PyTorch runs the same weights, so the parity check stays
strict. Matrices the plan does not cover (not an nn.Linear of the body) are q4.
"""

from __future__ import annotations

import numpy as np

from tensorgpt.export.quantizers import register
from tensorgpt.export.quantizers.base import WeightQuantizer, WeightSpec

DEFAULT_BITS = 4.0


def _codec(plan: dict):
    from tensorgpt.export.quantizers.q3 import decode_q3_nodes
    from tensorgpt.export.weight_blocks import Q4_CODEC, BlockCodec, weight_key
    from tensorgpt.tt_ops.q3_blocks import pack_q3_codes

    def encode(w: np.ndarray):
        planned = plan.get(weight_key(w))
        if planned is None:
            return Q4_CODEC.encode(w)
        back = planned.decoded()
        k, n = w.shape
        exact = (back == w).reshape(k // 32, 32, n).all(axis=1)  # blocks kept bit for bit
        if planned.fmt.levels == 16:
            # the plan's q4 weights (a Q4_1 source's own) lie on a q4 grid: its exact fit
            # finds that grid again
            parts, q4_back, _ = Q4_CODEC.encode(back)
            if not np.array_equal(q4_back, back):
                raise AssertionError("mixed: a q4 plan did not come back on the q4 grid")
            return parts, back, exact
        low, high = pack_q3_codes(planned.codes)
        block = planned.fmt.block
        tag = "" if block == 32 else str(block)
        parts = {
            "q3lo": low,
            "q3hi": high,
            f"scale{tag}": planned.scale[:, None, :],
            f"min{tag}": planned.minimum[:, None, :],
        }
        return parts, back, exact

    def decode(b, names: list[str], k: int, n: int) -> str:
        if len(names) == 3:  # q4: codes, scale, minimum
            return Q4_CODEC.decode(b, names, k, n)
        block = int(names[2].rsplit(".", 1)[1].removeprefix("scale") or 32)
        return decode_q3_nodes(b, names, k, n, block)

    return BlockCodec(encode, decode)


@register
class MixedBlocks(WeightQuantizer):
    name = "mixed"
    help = (
        "each weight matrix as q4 (5 bits per weight), q3 (4) or 3-bit blocks of 64 (3.5), "
        f"GPTQ-quantized, formats chosen under --weight-bits (default {DEFAULT_BITS}) by the "
        "loss each adds on calibration text (--calib-text, else text the model generates)"
    )
    order = 36
    calibrated = True

    def validate(self, spec: WeightSpec) -> None:
        from tensorgpt.export.mixed_weights import check_bits

        check_bits(DEFAULT_BITS if spec.bits is None else spec.bits)

    def quantize_calibrated(self, model, adapter, tokenizer, spec: WeightSpec, log):
        from tensorgpt.export.mixed_weights import plan_mixed
        from tensorgpt.export.q4_source import name_tensors
        from tensorgpt.export.weight_blocks import load_decoded_into_torch, quantize_weights_q4

        bits = DEFAULT_BITS if spec.bits is None else spec.bits
        plan, plan_report = plan_mixed(adapter, tokenizer, bits, spec.calib_text, log)
        decoded, report = quantize_weights_q4(model, codec=_codec(plan))
        # PyTorch runs the same weights, so the parity check stays strict
        name_tensors(report, load_decoded_into_torch(adapter.decoder_body(), decoded))
        del decoded
        for name, t in report["tensors"].items():
            planned = plan_report["matrices"].get(name.removesuffix(".weight"), {})
            t["format"] = planned.get("format", "q4")
            if "estimated_loss" in planned:  # nats per token this matrix's format adds
                t["estimated_loss"] = planned["estimated_loss"]
        report["format"] = "mixed"
        report["mixed"] = {k: v for k, v in plan_report.items() if k != "matrices"}
        log(f"mixed weights: {report['weights']} matrices")
        return report
