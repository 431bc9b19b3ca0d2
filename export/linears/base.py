"""`LinearSpec` (what `--linears` and `--linear-ratio` ask for), `LinearCompressor` (what one
mode states) and `compress_linears`, the driver every mode shares:

    groups   the body's nn.Linear layers by shared input (factored.py): q/k/v, gate/up, o,
             down for a Llama; a mode with `shared = False` factors every layer alone
    bases    one orthonormal input basis per group with the exact error of dropping each
             direction (`directions`: tt_ops/rank_allocation.py)
    ranks    `allocate_ranks` under budget = ratio x the linear layers' weight parameters
             (biases stay as they are and are not counted)
    factors  A = Q_k^T (k, in), B_j = W_j Q_k (out_j, k) with Q_k the first k basis columns:
             for ESPACE Q_k = P, for SVD B = U_k diag(s_k) exactly (W V = U S)

The factored layers replace the originals in the PyTorch model, which is what gets traced,
quantized (`--quantize q4` quantizes A and B like any weight) and checked against.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

if TYPE_CHECKING:
    from tensorgpt.tt_ops.rank_allocation import Directions


@dataclass(frozen=True)
class LinearSpec:
    method: str = "none"
    ratio: float | None = None  # stored weight parameters of the linear layers / original
    calib_text: str | None = None  # calibrated modes; None: text the model generates
    heal_steps: int = 0  # fit the compressed parameters to the original logits (heal.py)

    def validate(self) -> None:
        from tensorgpt.export.linears import get_linears

        if self.heal_steps < 0:
            raise ValueError(f"--linear-heal-steps must be >= 0, got {self.heal_steps}")
        if self.method == "none":
            if self.ratio is not None:
                raise ValueError("--linear-ratio needs --linears (espace, svd, ...)")
            if self.heal_steps:
                raise ValueError("--linear-heal-steps needs --linears (espace, saten, ...)")
            return
        get_linears(self.method)
        if self.ratio is None:
            raise ValueError(f"--linears {self.method} needs --linear-ratio R (0 < R < 1)")
        if not 0 < self.ratio < 1:
            raise ValueError(f"--linear-ratio must be in (0, 1), got {self.ratio}")

    def options(self) -> dict:
        from tensorgpt.common.files import stored_path

        text = None if self.calib_text is None else stored_path(self.calib_text)
        heal = {"heal_steps": self.heal_steps} if self.heal_steps else {}
        return {"method": self.method, "ratio": self.ratio, "calib_text": text, **heal}


class LinearCompressor:
    name: ClassVar[str]
    help: ClassVar[str]  # one line for --help
    order: ClassVar[int] = 100
    shared: ClassVar[bool] = True  # layers reading one input share A
    calibrated: ClassVar[bool] = True  # needs the eigenpairs of the inputs' autocorrelation
    per_token: ClassVar[bool] = False  # ... with every position's input scaled to norm 1
    # ... weighted by the loss gradients at the layers' outputs (export/activation_stats.py);
    # then the errors are loss per position, one scale for all groups (not divided by totals)
    loss_weighted: ClassVar[bool] = False

    def compress(self, adapter, tokenizer, spec: LinearSpec, fingerprint: str, log) -> dict | None:
        """A mode that is not y = B (A x) (saten.py) replaces the layers itself and returns
        the manifest's report; None: the shared driver below factors them."""
        return None

    def directions(
        self, weight: np.ndarray, eig: tuple[np.ndarray, np.ndarray] | None
    ) -> Directions:
        """weight (out, in): the group's stacked weights; eig: (lam (in,), U (in, in)) of the
        group's input autocorrelation C = U diag(lam) U^T, or None if not `calibrated`; when
        `loss_weighted`, also each row's share of the group's output gradients (out,)."""
        raise NotImplementedError


def compress_linears(
    adapter, tokenizer, spec: LinearSpec, fingerprint: str, log: Callable[[str], None]
) -> dict:
    """Factor the body's linear layers in place; returns the manifest's `linears` report."""
    import torch

    from tensorgpt.common.progress import track
    from tensorgpt.export.linears import get_linears
    from tensorgpt.export.linears.factored import input_groups, replace_group
    from tensorgpt.tt_ops.rank_allocation import STEP, allocate_ranks

    spec.validate()
    compressor = get_linears(spec.method)
    if (report := compressor.compress(adapter, tokenizer, spec, fingerprint, log)) is not None:
        return report
    body = adapter.decoder_body()
    vocab = adapter.shape().vocab_size
    probe = (torch.arange(8) * 7919 % vocab)[None]
    groups = input_groups(adapter.model, body, probe)
    if not compressor.shared:
        groups = [[name] for g in groups for name in g]
    if not groups:
        raise ValueError(
            f"--linears {spec.method}: {type(adapter.model).__name__} has no nn.Linear layers "
            "in its body (GPT-2's Conv1D layers are not supported yet)"
        )
    weights = [
        np.concatenate([body.get_submodule(n).weight.detach().float().numpy() for n in g])
        for g in groups
    ]
    eigs: list = [None] * len(groups)
    calibration = None
    if compressor.calibrated:
        from tensorgpt.export.activation_stats import activation_eig

        eigs, calibration = activation_eig(
            adapter,
            tokenizer,
            [g[0] for g in groups],
            spec.calib_text,
            fingerprint,
            compressor.per_token,
            groups if compressor.loss_weighted else None,
        )
        if compressor.loss_weighted:  # each layer's share, on every row of its weight
            outs = [[body.get_submodule(n).weight.shape[0] for n in g] for g in groups]
            eigs = [(lam, u, np.repeat(f, o)) for (lam, u, f), o in zip(eigs, outs, strict=True)]
    dirs = [
        compressor.directions(w, c)
        for w, c in zip(
            track(weights, f"[export] {spec.method}: bases of {len(groups)} groups", unit="group"),
            eigs,
            strict=True,
        )
    ]
    original = sum(w.size for w in weights)
    ranks = allocate_ranks(dirs, int(spec.ratio * original), STEP, not compressor.loss_weighted)
    stored = 0
    rows = []
    for names, w, d, k in zip(groups, weights, dirs, ranks, strict=True):
        if k is None:
            stored += w.size
        else:
            q = d.basis[:, :k]
            splits = np.cumsum([body.get_submodule(n).weight.shape[0] for n in names])[:-1]
            replace_group(body, names, q.T, np.split(w @ q, splits))
            stored += k * (w.shape[1] + w.shape[0])
        # the share of the group's output error measure that the dropped directions carry
        dropped = 0.0 if k is None else float(d.errors[k:].sum() / max(d.errors.sum(), 1e-300))
        rows.append(
            {"layers": names, "in": w.shape[1], "out": w.shape[0], "rank": k, "dropped": dropped}
        )
    factored = sum(r["rank"] is not None for r in rows)
    log(
        f"{spec.method}: {factored} of {len(groups)} groups factored, linear weights "
        f"{stored / 1e6:.2f}M of {original / 1e6:.2f}M parameters ({stored / original:.3f})"
    )
    return {**budget_report(spec, STEP, original, stored, calibration), "groups": rows}


def budget_report(spec, step: int, original: int, stored: int, calibration: str | None) -> dict:
    """The manifest's `linears` facts every mode shares: options, rank step, parameters."""
    return {
        **spec.options(),
        "step": step,
        "original_params": int(original),
        "stored_params": int(stored),
        "stored_ratio": round(stored / original, 6),
        "calibration": calibration,
    }
