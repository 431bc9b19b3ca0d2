"""--method tc: transform coding (frequency classes, loss-sensitivity whitening, water-filled
bits; tt_ops/transform_code.py), calibrated on a text, optionally healed (export/healing.py)."""

from __future__ import annotations

from tensorgpt.export.methods import register
from tensorgpt.export.methods.base import EmbeddingMethod, Option

# The README's recommendation (14.5x smaller than fp32): the smallest budget of the sweep grid
# (tensorgpt/sweep.py) whose perplexity stays within 1% of fp32 on SmolLM2-135M (docs/results.md).
DEFAULT_BITS = 2.2

BITS_PER_WEIGHT = Option(
    "bits_per_weight",
    f"tc: table budget in bits per entry (default: {DEFAULT_BITS:g}, 14.5x smaller than fp32; "
    "the README's recommendation: the smallest budget of the sweep grid that keeps "
    "SmolLM2-135M's perplexity within 1%% of fp32)",
    type=float,
    check=lambda v: None if v is None or 0 < v <= 16 else f"must be in (0, 16], got {v}",
)
CALIB_TEXT = Option(
    "calib_text",
    "tc (required): UTF-8 text from the model's domain for token counts and loss "
    "sensitivity, e.g. wikitext-2 valid.txt; never the evaluation text",
)
HEAL_STEPS = Option(
    "heal_steps",
    "tc: after coding, fit the codebooks, scales, means and basis to the original "
    "model's next-token distributions on --calib-text for this many steps of 2 x 512 tokens "
    "(about 8 s each for SmolLM2-135M on 2 cores; 200 fits in 30 min). Resumable: rerun the "
    "same command after an interruption (checkpoints in ~/.cache/tensorgpt/heal)",
    type=int,
    default=0,
    check=lambda v: None if v >= 0 else f"must be >= 0, got {v}",
)


@register
class TransformCode(EmbeddingMethod):
    name = "tc"
    help = "transform coding; needs --calib-text"
    order = 50
    options = (BITS_PER_WEIGHT, CALIB_TEXT, HEAL_STEPS)

    def validate(self, spec) -> None:
        if not spec.calib_text:
            raise ValueError(
                "--method tc needs --calib-text FILE (text other than the evaluation text)"
            )

    def compress(self, table, spec, adapter=None, tokenizer=None):
        from tensorgpt.common.files import read_text
        from tensorgpt.common.progress import stage
        from tensorgpt.export.calibration import compute_stats, sensitivity_metric
        from tensorgpt.export.embedding_transform_code import TransformCodedEmbedding
        from tensorgpt.tt_ops.transform_fit import fit_transform_code

        if adapter is None or tokenizer is None:
            raise ValueError("--method tc needs the model and tokenizer for calibration")
        text = read_text(spec.calib_text, "--calib-text")
        stats = compute_stats(adapter, tokenizer, text)
        bits = spec.bits_per_weight or DEFAULT_BITS
        with stage(f"[export] fitting the transform code ({bits:g} bits per entry)"):
            code = fit_transform_code(
                table,
                bits_per_weight=bits,
                token_counts=stats["counts"],
                sensitivity=sensitivity_metric(stats),
            )
        info = {
            "bits_per_weight": round(code.bits_per_weight(), 4),
            "classes": code.n_classes,
            "calibration_tokens": int(stats["n_tokens"]),
            "calibration_text": str(spec.calib_text),
            "unseen_tokens": int((stats["counts"] == 0).sum()),
        }
        if spec.heal_steps:
            from tensorgpt.export.healing import HealConfig, heal

            code, info["healing"] = heal(
                adapter, tokenizer, code, text, HealConfig(steps=spec.heal_steps)
            )
        return TransformCodedEmbedding(code), info
