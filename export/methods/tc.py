"""--method tc: transform coding (frequency classes, loss-sensitivity whitening, water-filled
bits; tt_ops/transform_code.py), optionally healed (export/healing.py).

Calibration (issue 19): by default none from the user. The row importance mixes the model's
expected token frequencies on text it generates with the tokenizer's prior
(tt_ops/row_prior.py), so every token of the vocabulary gets bits by a rule and the code holds
on text of any domain; the metric comes from the same generated text. --calib-text specialises
the code to a domain: its counts take all but the Good-Turing unseen mass, and its metric the
same share. Statistics are cached by the model's weights (~/.cache/tensorgpt/calibration).
Under --stream the model is never held, so it is not run: `calibrate_without_model`."""

from __future__ import annotations

from tensorgpt.export.methods import register
from tensorgpt.export.methods.base import EmbeddingMethod, Option

# Default budgets (rules from measured frontiers on SmolLM2-135M, docs/quality_notes.md):
# - with --calib-text (the deployment domain is known): the smallest budget of the sweep grid
#   (tensorgpt/sweep.py) whose perplexity stays within 1% of fp32 on text of that domain
#   (14.5x smaller; docs/results.md);
# - without (any domain): the budget whose worst domain of four (wikitext-2 test, Python
#   source, licenses, fortunes; none used for calibration) stayed within about 1% (6x smaller,
#   +0.97% worst end to end with the uniform logit bias, +0.46% decoded head only with the
#   per-row logit gain that replaced it; `python benchmarks/domain_quality.py --calib none
#   --weights rule --bits 5.33 --head-only`).
#   Below it the loss is no longer domain-specific: every domain loses about as much.
DEFAULT_BITS = 2.2
DEFAULT_BITS_ANY_DOMAIN = 5.33

BITS_PER_WEIGHT = Option(
    "bits_per_weight",
    f"tc: table budget in bits per entry (default: {DEFAULT_BITS:g}, 14.5x smaller than fp32, "
    f"with --calib-text; {DEFAULT_BITS_ANY_DOMAIN:g}, 6x, without: the budgets measured on "
    "SmolLM2-135M within about 1%% of fp32 in the text's domain, and on the worst of four "
    "domains)",
    type=float,
    check=lambda v: None if v is None or 0 < v <= 16 else f"must be in (0, 16], got {v}",
)
CALIB_TEXT = Option(
    "calib_text",
    "tc: optional text of the deployment domain to specialise the code to (not the evaluation "
    "text); without it: text the model generates, mixed with the tokenizer's prior",
)
CALIB_MIX = Option(
    "calib_mix",
    "tc with --calib-text: 'yes' also mixes in the model's own samples and the tokenizer's "
    "prior (Good-Turing share; not yet measured end to end on SmolLM2), 'no' (default) "
    "calibrates on the text alone, as the README's measured recommendation does",
    type=lambda v: {"yes": True, "no": False}.get(v, v),
    check=lambda v: None if v in (None, True, False) else f"must be yes or no, got {v!r}",
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


def calibrate_without_model(tokenizer, vocab: int, text: str | None, mix: bool):
    """`calibrate` for `--stream`, which never holds the model and so cannot run it: the row
    importance follows the same rule from what needs no model (the text's token counts; with
    --calib-mix yes or without a text, mixed with the tokenizer's prior by the Good-Turing
    rule of tt_ops/row_prior.py, the model's own samples left out), and the metric is the
    identity (plain squared error) where `calibrate` measures the loss sensitivity with the
    model's gradients. Returns (row importance (V,), None, report)."""
    from tensorgpt.export.calibration import text_ids, token_counts
    from tensorgpt.tt_ops.row_prior import row_importance

    info = {"calibration": "no model run (--stream): token counts, identity metric"}
    counts = None
    if text is not None:
        ids = text_ids(tokenizer, text)
        counts = token_counts(ids, vocab)
        info["calibration_tokens"] = int(ids.size)
        info["unseen_tokens"] = int((counts == 0).sum())
    if counts is not None and not mix:
        return counts, None, info
    weights, info["calibration_shares"] = row_importance(vocab, user_counts=counts)
    return weights, None, info


@register
class TransformCode(EmbeddingMethod):
    name = "tc"
    help = "transform coding, calibrated on the model's own samples (+ optional --calib-text)"
    order = 50
    options = (BITS_PER_WEIGHT, CALIB_TEXT, CALIB_MIX, HEAL_STEPS)

    def validate(self, spec) -> None:
        if spec.get("calib_mix") is not None and not spec.calib_text:
            raise ValueError("--calib-mix goes with --calib-text (without a text tc uses the mix)")
        if spec.heal_steps and not spec.calib_text:
            raise ValueError("--heal-steps needs --calib-text FILE (healing fits on a text)")

    def compress(self, table, spec, adapter=None, tokenizer=None):
        from tensorgpt.common.files import stored_path
        from tensorgpt.common.progress import stage
        from tensorgpt.export.calibration import default_cache_dir, model_fingerprint, window_for
        from tensorgpt.export.embedding_transform_code import TransformCodedEmbedding
        from tensorgpt.tt_ops.transform_fit import fit_transform_code

        if tokenizer is None:
            raise ValueError("--method tc needs the tokenizer for calibration")
        if adapter is None and spec.heal_steps:
            raise ValueError("--heal-steps runs the model: it needs the in-memory export")
        text = None
        if spec.calib_text:
            from tensorgpt.common.files import read_text

            text = read_text(spec.calib_text, "--calib-text")
        mix = bool(spec.get("calib_mix"))
        states = None
        if adapter is None:  # --stream: no model to run, so no head statistics
            weights, metric, info = calibrate_without_model(tokenizer, table.shape[0], text, mix)
            mean_h = None
        else:
            fingerprint = model_fingerprint(adapter, tokenizer)
            weights, metric, mean_h, info = calibrate(
                adapter, tokenizer, table.shape[0], text, fingerprint, default_cache_dir(), mix=mix
            )
            if mean_h is not None and adapter.head_is_tied():
                # the tied head's per-row gain on each row's coded part, fitted where the
                # token competes as an output on the model's own samples (tt_ops/head_gain.py);
                # it replaces the uniform bias E[h] . e_v at the same 2 bytes per row: better
                # on every domain at 6x, 12x and 24x (docs/quality_notes.md, "Beyond scalar
                # codes")
                states = generated_head_states(adapter, tokenizer, fingerprint)
        bits = spec.bits_per_weight or (
            DEFAULT_BITS if text is not None else DEFAULT_BITS_ANY_DOMAIN
        )
        with stage(f"[export] fitting the transform code ({bits:g} bits per entry)"):
            code = fit_transform_code(
                table,
                bits_per_weight=bits,
                token_counts=weights,
                sensitivity=metric,
                head_states=states,
                head_logits=(1.0, None) if states is None else head_logits(adapter),
            )
        info = {
            "bits_per_weight": round(code.bits_per_weight(), 4),
            "classes": code.n_classes,
            "logit_bias": code.logit_bias is not None,
            "logit_scale": code.logit_scale is not None,
            **info,
            "calibration_text": None if text is None else stored_path(spec.calib_text),
        }
        if spec.heal_steps:
            from tensorgpt.export.healing import HealConfig, heal

            code, info["healing"] = heal(
                adapter,
                tokenizer,
                code,
                text,
                HealConfig(steps=spec.heal_steps, window=window_for(adapter)),
            )
        return TransformCodedEmbedding(code), info


def generated_head_states(adapter, tokenizer, fingerprint: str):
    """The tied head's inputs on the model's own samples (the windows `calibrate` generates),
    for the per-row logit gain; cached with the calibration."""
    from tensorgpt.export.calibration import default_cache_dir
    from tensorgpt.export.generated_calibration import generated_head_states as states

    return states(adapter, tokenizer, _generation(adapter), fingerprint, default_cache_dir())


def head_logits(adapter) -> tuple[float, float | None]:
    """(multiplier, softcap) the model applies to the head's product (models/base.py
    HeadQuirks), so the gain's probability weights are the model's own distribution."""
    q = adapter.head_quirks()
    return (q.multiply or 1.0) / (q.divide or 1.0), q.softcap


def _generation(adapter):
    """Windows of WINDOW tokens, or half the model's context if that is shorter (the start
    fits)."""
    from tensorgpt.export.calibration import WINDOW
    from tensorgpt.export.generated_calibration import GenerationConfig

    context = adapter.shape().max_position_embeddings or 2 * WINDOW
    return GenerationConfig(length=max(2, min(WINDOW, context // 2)))


def calibrate(
    adapter,
    tokenizer,
    vocab: int,
    text: str | None,
    fingerprint: str,
    cache_dir,
    mix: bool = True,
):
    """(row importance (V,), metric (D, D), mean head input (D,), report) from the model's own
    samples and, when given, a user text (tt_ops/row_prior.py's mixing rule; the metric and
    the head mean are mixed with the same shares). mix=False with a text: the text's own
    statistics only (the calibration the README's tc figures were measured with), and no head
    mean: the logit bias was measured for the text-free calibration, that path is unchanged."""
    from tensorgpt.export.calibration import head_mean, sensitivity_metric, text_stats

    if text is not None and not mix:
        user = text_stats(adapter, tokenizer, text, fingerprint, cache_dir)
        counts = user["counts"][:vocab]
        info = {
            "calibration": "text",
            "calibration_tokens": int(user["n_tokens"]),
            "unseen_tokens": int((counts == 0).sum()),
        }
        return counts, sensitivity_metric(user), None, info
    from tensorgpt.export.generated_calibration import generated_stats
    from tensorgpt.tt_ops.row_prior import row_importance

    config = _generation(adapter)
    gen = generated_stats(adapter, tokenizer, config, fingerprint, cache_dir)
    user = None if text is None else text_stats(adapter, tokenizer, text, fingerprint, cache_dir)
    weights, shares = row_importance(
        vocab,
        model_mass=gen["q"][:vocab],
        user_counts=None if user is None else user["counts"][:vocab],
    )
    metric, mean_h = sensitivity_metric(gen), head_mean(gen)
    if user is not None:
        metric = shares["user"] * sensitivity_metric(user) + (1 - shares["user"]) * metric
        mean_h = shares["user"] * head_mean(user) + (1 - shares["user"]) * mean_h
    info = {
        "calibration": "generated" if user is None else "generated + text",
        "calibration_shares": shares,
        "generated_tokens": int(gen["n_tokens"]),
        "generation": {"sequences": config.sequences, "length": config.length, "seed": config.seed},
    }
    if user is not None:
        info["calibration_tokens"] = int(user["n_tokens"])
        info["unseen_tokens"] = int((user["counts"][:vocab] == 0).sum())
    return weights, metric, mean_h, info
