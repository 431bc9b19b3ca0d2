"""--quantize q4: transformer weights as 4-bit blocks of 32 with fp16 scale and minimum (the
llama.cpp Q4_1 grid, kept exactly for a Q4_0 / Q4_1 GGUF source), decoded once at session load
(codec and graph: export/weight_blocks.py)."""

from __future__ import annotations

from tensorgpt.export.quantizers import register
from tensorgpt.export.quantizers.base import WeightQuantizer


@register
class Q4Blocks(WeightQuantizer):
    name = "q4"
    help = (
        "weights as 4-bit blocks of 32 with fp16 scale and minimum (llama.cpp Q4_1 grid, "
        "kept exactly for a Q4_0 / Q4_1 GGUF source), decoded once at session load"
    )
    order = 30
    packs = True

    def quantize_weights(self, model, adapter, log):
        from tensorgpt.export.q4_source import name_tensors
        from tensorgpt.export.weight_blocks import load_decoded_into_torch, quantize_weights_q4

        decoded, report = quantize_weights_q4(model)
        # PyTorch runs the same 4-bit weights, so the parity check stays strict
        name_tensors(report, load_decoded_into_torch(adapter.decoder_body(), decoded))
        del decoded
        log(
            f"q4 weights: {report['weights']} matrices, {report['exact_weights']} already on the grid"
        )
        return report

    def pack_weights(self, model, adapter, log):
        from tensorgpt.export.packed.fuse_projections import fuse_shared_inputs
        from tensorgpt.export.packed.weights import pack_weights_q4
        from tensorgpt.export.packed.zero_points import center_zero_points
        from tensorgpt.export.weight_blocks import load_decoded_into_torch

        decoded, report = pack_weights_q4(model)
        report["fused_groups"] = fuse_shared_inputs(model)
        report["centered_zero_points"] = center_zero_points(model)
        load_decoded_into_torch(adapter.decoder_body(), decoded)
        del decoded
        log(
            f"q4 weights as MatMulNBits: {report['weights']} matrices "
            f"({report['exact_weights']} already on the grid), {report['fused_groups']} fused groups"
        )
        return report
