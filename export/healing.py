"""Healing: fit a transform-coded table's continuous parameters to the original model.

Transform coding (tt_ops/transform_code.py) fixes the integer codes and class ids of every row
without looking at the model's outputs.  Healing then keeps those fixed and fits what is
continuous -- the codebooks, the per-(class, axis) scales, the class means and the basis --
so that the model using the decoded table (as its input embedding and, when tied, its head)
predicts what the original model predicts on a calibration text, every other weight frozen:

    min  E_t  KL( p_orig(. | x_<t)  ||  p_healed(. | x_<t) )

over windows of the calibration text.  The KL runs over the whole vocabulary, so rows of
tokens that never occur in the text are still fitted through the tied head (their logits
must keep matching the original's), not only the rows the text happens to contain.

Parametrisation (so one learning rate suits every tensor):
    codebook_g   = cb0_g + lr-scaled free values            (unit-scale values)
    scale[c, k]  = scale0[c, k] * exp(s[c, k])              (log-scale, init 0)
    means[c]     = means0[c] + table_rms * m[c]             (init 0)
    basis[k]     = basis0[k] + rms(basis0) * b[k]           (int8 values as float, init 0)
Afterwards the values are rounded to the storage types (fp16; the basis re-quantized to int8
per row, its row scale folded into `scale`), so the healed table costs exactly the bytes the
unhealed one did.

Cost per step: one no-grad forward of the original model, one forward + input-gradient
backward of the healed one, and the table decode (V x K x D multiply-adds, twice with grads).
SmolLM2-135M with 2 windows of 512 per step: about 8.4 s on 2 idle cores.

Resumable (the loop, shared with the linear layers' healing: export/heal_loop.py): the state
(parameters, Adam moments, step) is checkpointed every few steps and on Ctrl-C to a file keyed
by the content of every input, so rerunning the same command resumes where it stopped; a
finished checkpoint makes the rerun instant.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tensorgpt.export.heal_loop import (
    HealConfig,
    Optimiser,
    default_checkpoint_dir,
    kl,
    original_log_probs,
    run_steps,
    split_held_out,
)
from tensorgpt.models import ModelAdapter
from tensorgpt.tt_ops.row_codecs import int8_rows
from tensorgpt.tt_ops.transform_code import CodeGroup, TransformCodedTable

__all__ = ["HealConfig", "HealableTable", "heal"]


def _torch():
    import torch

    return torch


def _int8_rows(basis):
    """Round each row to its int8 grid (absmax / 127), passing gradients straight through.

    The file stores the basis as int8 rows, so the fit must see the rounded basis: a basis
    fitted in float and rounded afterwards lost what healing gained (measured on SmolLM2).
    """
    step = (basis.detach().abs().amax(1, keepdim=True) / 127.0).clamp_min(1e-30)
    return basis + ((basis / step).round().clamp(-127, 127) * step - basis).detach()


class HealableTable:
    """A TransformCodedTable with its continuous parameters as torch tensors.

    `decode()` gives the (V, D) table as a differentiable function of the parameters;
    `to_code()` rounds them back into a TransformCodedTable of identical byte size.
    """

    def __init__(self, code: TransformCodedTable) -> None:
        torch = _torch()
        if code.row_gain is not None:
            raise ValueError("healing: transform codes with per-row gains are not supported")
        self.code = code
        self.scale0 = torch.tensor(code.scale.astype(np.float32))
        self.means0 = torch.tensor(code.means.astype(np.float32))
        self.basis0 = torch.tensor(code.basis.astype(np.float32))
        self.cb0 = [torch.tensor(g.codebook.astype(np.float32)) for g in code.groups]
        self.table_rms = float(
            np.sqrt(np.mean(code.means.astype(np.float64) ** 2)) or 1.0
        )  # the means' magnitude sets the step of the mean update
        self.basis_rms = float(self.basis0.pow(2).mean().sqrt()) or 1.0
        # fixed integer structure: per group its axes and codes; rows are decoded class by
        # class (each class's rows in token order) and put back in token order by `order`
        self.class_sizes = np.bincount(code.class_ids, minlength=code.n_classes).tolist()
        self.axes = [torch.from_numpy(g.axes.astype(np.int64)) for g in code.groups]
        self.codes = [
            torch.from_numpy(g.codes(self.class_sizes[g.cls]).astype(np.int64)) for g in code.groups
        ]
        grouped = np.concatenate([code.class_rows(c) for c in range(code.n_classes)])
        self.order = torch.from_numpy(np.argsort(grouped, kind="stable"))
        # free parameters, all zero at the start: the healed table starts as the coded one
        self.log_scale = torch.zeros_like(self.scale0, requires_grad=True)
        self.mean_delta = torch.zeros_like(self.means0, requires_grad=True)
        self.basis_delta = torch.zeros_like(self.basis0, requires_grad=True)
        self.cb_delta = [torch.zeros_like(c, requires_grad=True) for c in self.cb0]

    def parameters(self) -> list:
        return [self.log_scale, self.mean_delta, self.basis_delta, *self.cb_delta]

    def state(self) -> dict:
        return {f"p{i}": p.detach().clone() for i, p in enumerate(self.parameters())}

    def load_state(self, state: dict) -> None:
        with _torch().no_grad():
            for i, p in enumerate(self.parameters()):
                p.copy_(state[f"p{i}"])

    def _values(self):
        scale = self.scale0 * self.log_scale.exp()
        means = self.means0 + self.table_rms * self.mean_delta
        basis = _int8_rows(self.basis0 + self.basis_rms * self.basis_delta)
        codebooks = [c0 + d for c0, d in zip(self.cb0, self.cb_delta)]
        return scale, means, basis, codebooks

    def decode(self):
        """(V, D) float32 table: means[c] + sum_g (codebook_g[codes] * scale[c, axes_g]) @ basis[axes_g].

        Per class, so each row only pays for the axes its class codes (not all K).
        """
        torch = _torch()
        scale, means, basis, codebooks = self._values()
        blocks = []
        for c, n_rows in enumerate(self.class_sizes):
            if n_rows == 0:
                continue
            block = means[c].expand(n_rows, -1)
            for g, axes, codes, cb in zip(self.code.groups, self.axes, self.codes, codebooks):
                if g.cls == c:
                    block = block + (cb[codes] * scale[c, axes]) @ basis[axes]
            blocks.append(block)
        return torch.cat(blocks)[self.order]

    def to_code(self) -> TransformCodedTable:
        """The fitted parameters in the storage types (fp16; basis int8 per row)."""
        torch = _torch()
        with torch.no_grad():
            scale, means, basis, codebooks = self._values()
        scale, means = scale.double().numpy(), means.double().numpy()
        basis_q, row_scale = int8_rows(basis.double().numpy())
        codebooks = [c.double().numpy() for c in codebooks]
        groups = [
            CodeGroup(g.cls, g.bits, g.axes, cb.astype(np.float16), g.planes)
            for g, cb in zip(self.code.groups, codebooks)
        ]
        return dataclasses.replace(
            self.code,
            means=means.astype(np.float16),
            scale=(scale * row_scale[None, :]).astype(np.float16),
            basis=basis_q,
            groups=groups,
            meta=dict(self.code.meta, healed=True),
        )


# ----------------------------------------------------------------------------- fitting


def _windows(ids: np.ndarray, window: int) -> np.ndarray:
    n = len(ids) // window
    if n < 1:
        raise ValueError(
            f"healing: the calibration text has {len(ids)} tokens, fewer than a window of {window}"
        )
    return ids[: n * window].reshape(n, window)


def _key(code: TransformCodedTable, table: np.ndarray, ids: np.ndarray, config: HealConfig) -> str:
    h = hashlib.sha256()
    for name, arr in sorted(code.arrays().items()):
        h.update(name.encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    h.update(np.ascontiguousarray(table, dtype=np.float32).tobytes())
    h.update(ids.astype(np.int64).tobytes())
    h.update(json.dumps(dataclasses.asdict(config), sort_keys=True).encode())
    return h.hexdigest()[:24]


def _kl_to(target, model, names: list[str], table, x):
    """Mean over positions of KL(target || model with `table` under every name in `names`)."""
    from torch.func import functional_call

    overrides = {n: table for n in names}
    logits = functional_call(model, overrides, (x,), {"use_cache": False}, tie_weights=False)
    return kl(target, logits.logits)


def _tied_names(adapter: ModelAdapter) -> list[str]:
    """Every parameter name under which the input embedding's weight is reachable."""
    weight = adapter.token_embedding().weight
    return [n for n, p in adapter.model.named_parameters(remove_duplicate=False) if p is weight]


def _calibration_windows(
    tokenizer, text: str, code: TransformCodedTable, config: HealConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, training windows, held-out windows) of `text`.

    The last tenth (at most 8 windows) is held out: healing is kept only if it lowers the KL
    there, so a fit that does not generalise never makes a file worse.
    """
    ids = np.asarray(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=np.int64)
    ids = ids[ids < code.vocab_size]
    return ids, *split_held_out(_windows(ids, min(config.window, len(ids))))


def _held_out_kls(model, names: list[str], held_out: np.ndarray, tables: list) -> list[float]:
    """Mean held-out KL of each table; the original model runs once per window for all."""
    torch = _torch()
    totals = [0.0] * len(tables)
    with torch.no_grad():
        for w in held_out:
            x = torch.from_numpy(w)[None]
            target = original_log_probs(model, x)
            for i, table in enumerate(tables):
                totals[i] += float(_kl_to(target, model, names, table, x))
    return [t / len(held_out) for t in totals]


def heal(
    adapter: ModelAdapter,
    tokenizer,
    code: TransformCodedTable,
    text: str,
    config: HealConfig | None = None,
    checkpoint: str | Path | None = None,
    progress: bool = True,
    on_step: Callable[[int], None] | None = None,
) -> tuple[TransformCodedTable, dict]:
    """Fit `code`'s codebooks, scales, means and basis to the model's outputs on `text`.

    adapter: the original model's adapter (models/; its embedding weight is the table `code`
        encodes; the model is not modified).  checkpoint: file to resume from and save to
        (default: a content-keyed file under ~/.cache/tensorgpt/heal).  on_step(step) runs
        after each step (tests use it to interrupt).  Returns the healed code and a report (KL
        before/after, seconds); the code comes back unchanged (report["kept"] False) when
        healing did not lower the KL on the held-out last tenth of the text.
    """
    torch = _torch()
    config = config or HealConfig()
    config.validate()
    model = adapter.model
    table = adapter.token_embedding().weight.detach().float().numpy()
    if table.shape != (code.vocab_size, code.dim):
        raise ValueError(f"healing: table shape {table.shape} does not match the code's")
    ids, windows, held_out = _calibration_windows(tokenizer, text, code, config)
    key = _key(code, table, ids, config)
    path = Path(checkpoint) if checkpoint else default_checkpoint_dir() / f"{key}.pt"
    names = _tied_names(adapter)

    healable = HealableTable(code)
    optimiser = Optimiser(healable, config, path, key)
    fit = optimiser.resume()
    resumed_from = fit.step

    def loss(x):
        return _kl_to(original_log_probs(model, x), model, names, healable.decode(), x)

    run_steps(model, loss, windows, optimiser, fit, config, progress, on_step)
    healed = healable.to_code()
    kl_before, kl_after = _held_out_kls(
        model, names, held_out, [torch.from_numpy(code.decode()), torch.from_numpy(healed.decode())]
    )
    kept = kl_after < kl_before
    k = min(8, len(fit.history))
    report = {
        "held_out_kl_before": kl_before,
        "held_out_kl_after": kl_after,
        "kept": bool(kept),
        "steps": config.steps,
        "tokens_per_step": int(config.windows_per_step * windows.shape[1]),
        "calibration_windows": int(len(windows)),
        "kl_first_steps": float(np.mean(fit.history[:k])) if fit.history else None,
        "kl_last_steps": float(np.mean(fit.history[-k:])) if fit.history else None,
        "seconds": round(fit.seconds, 1),
        "resumed_from_step": resumed_from,
        "head_tied": bool(adapter.head_is_tied()),
        "checkpoint": str(path),
        "config": dataclasses.asdict(config),
    }
    return (healed if kept else code), report
