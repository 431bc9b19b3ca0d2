"""`--linear-heal-steps N`: fit the compressed linear layers' own parameters to the original
model's next-token distributions (issue 15, item 3), with the table's fitting loop
(export/heal_loop.py: Adam with warm-up and cosine decay, progress bar, resumable checkpoints):

    min  E_t  KL( p_orig(. | x_<t)  ||  p_compressed(. | x_<t) )

What is fitted: every parameter of a layer `--linears` replaced, nothing else. ESPACE / SVD:
the projection A = P^T (shared by its group) and each projected weight B = W P
(factored.py); Saten: both TT cores, the residual entries' values and 1/d (saten_layer.py;
the entries' columns stay). Biases, norms, the table and every layer left dense are frozen,
so the file keeps its bytes.

Target: the original model, run with the original layers put back in place for its forward
(the modules the compressor replaced, kept by reference: no copy of the model).

Text: the windows the linear layers were calibrated on (export/activation_stats.py): those of
--calib-text if given, else the 8 x 512 tokens the *original* model samples for the default
calibration (export/generated_calibration.py, cached), never an evaluation text. The last
tenth (at least one window) is held out: the fit is kept only if it lowers the KL there, so
healing never makes a file worse on its own calibration distribution. (A larger generated
set was tried first: sampling 32 x 512 tokens ran at ~5 s per token on the shared machine.)

Quantization: with `--quantize q4` healing runs *through* q4 (straight-through estimator):
each weight's forward is its q4 block decode (tt_ops/q4_grid.py's min/max grid: blocks of
32 along the MatMul's contraction axis, fp16 scale and minimum), the gradient goes to the
float weight unchanged, and the fitted weights are left on that grid, so q4 stores exactly
what was fitted. Other quantizers (q3, mixed, int8) quantize the healed float weights after.

Learning rate: each tensor's own, LR x its RMS at the start (one rule for A, B, cores,
entries and 1/d, whose scales differ by orders of magnitude).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from tensorgpt.export.heal_loop import (
    HealConfig,
    Optimiser,
    default_checkpoint_dir,
    kl,
    original_log_probs,
    run_steps,
    split_held_out,
)
from tensorgpt.export.linears.factored import FactoredLinear
from tensorgpt.export.linears.saten_layer import SatenLinear

LR = 2e-3  # Adam's step for each tensor: LR x that tensor's RMS at the start
WINDOWS_PER_STEP = 1  # backward activations of one window: SmolLM2 stays under ~3 GB
BLOCK = 32  # q4's block along the contraction axis (export/weight_blocks.py)


class OnQ4Grid(nn.Module):
    """Parametrization: the weight as q4 decodes it, gradient passed straight through.

    axis: the MatMul's contraction axis in the parameter's layout (1 for an nn.Linear
    weight (out, in), 0 for a Saten core (in-part, out-part)); blocks of 32 along it."""

    def __init__(self, axis: int) -> None:
        super().__init__()
        self.axis = axis

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w + (on_q4_grid(w, self.axis) - w).detach()


def on_q4_grid(w: torch.Tensor, axis: int) -> torch.Tensor:
    """q4's decode of w: per block of 32 along `axis`, d = fp16((max - min) / 15),
    m = fp16(min), codes rint((w - m) / d) in 0..15, value q d + m (tt_ops/q4_grid.py)."""
    v = w.movedim(axis, 0)
    blocks = v.reshape(v.shape[0] // BLOCK, BLOCK, -1)
    low, high = blocks.amin(1, keepdim=True), blocks.amax(1, keepdim=True)
    d = ((high - low) / 15).half().float()
    m = low.half().float()
    q = torch.round((blocks - m) / torch.where(d == 0, torch.ones_like(d), d)).clamp(0, 15)
    return (q * d + m).reshape(v.shape).movedim(0, axis)


def _healed_tensors(body: nn.Module, names: list[str]) -> list[tuple[nn.Module, str, int | None]]:
    """(module, parameter name, q4 contraction axis or None) of every compressed parameter of
    the replaced layers `names`, each once (a group's shared projection appears once)."""
    out, seen = [], set()
    for name in names:
        layer = body.get_submodule(name)
        if isinstance(layer, FactoredLinear):
            tensors = [(layer.proj, "weight", 1), (layer.out, "weight", 1)]
        elif isinstance(layer, SatenLinear):
            tensors = [(layer, "core1", 0), (layer, "core2", 0), (layer, "inv_scale", None)]
            tensors += [(layer, "value", None)] if layer.per_row else []
        else:
            raise ValueError(f"--linear-heal-steps: no rule for {type(layer).__name__} ({name})")
        for module, attr, axis in tensors:
            if (id(module), attr) not in seen:
                seen.add((id(module), attr))
                out.append((module, attr, axis))
    return out


class HealableLinears:
    """The compressed parameters, in place in the model (what run_steps trains)."""

    def __init__(self, tensors: list[tuple[nn.Module, str, int | None]], through_q4: bool):
        self.tensors = tensors
        self.on_grid = []
        for module, attr, axis in tensors:
            w = getattr(module, attr)
            if through_q4 and axis is not None and w.shape[axis] % BLOCK == 0:
                parametrize.register_parametrization(module, attr, OnQ4Grid(axis))
                self.on_grid.append((module, attr, axis))

    def _param(self, module: nn.Module, attr: str) -> nn.Parameter:
        if parametrize.is_parametrized(module, attr):
            return module.parametrizations[attr].original
        return getattr(module, attr)

    def parameters(self) -> list[nn.Parameter]:
        return [self._param(m, a) for m, a, _ in self.tensors]

    def param_groups(self, lr: float) -> list[dict]:
        groups = []
        for p in self.parameters():
            rms = float(p.detach().pow(2).mean().sqrt()) or 1.0
            groups.append({"params": [p], "lr": lr * rms})
        return groups

    def state(self) -> dict:
        return {f"p{i}": p.detach().clone() for i, p in enumerate(self.parameters())}

    def load_state(self, state: dict) -> None:
        with torch.no_grad():
            for i, p in enumerate(self.parameters()):
                p.copy_(state[f"p{i}"])

    def finish(self) -> None:
        """Leave every parametrized weight on its q4 grid as a plain parameter."""
        for module, attr, axis in self.on_grid:
            parametrize.remove_parametrizations(module, attr, leave_parametrized=False)
            with torch.no_grad():
                w = getattr(module, attr)
                w.copy_(on_q4_grid(w, axis))


@contextmanager
def _swapped(body: nn.Module, modules: dict[str, nn.Module]) -> Iterator[None]:
    """`modules` put in place under their names for the block, then the current ones back."""
    current = {name: body.get_submodule(name) for name in modules}

    def put(layers: dict[str, nn.Module]) -> None:
        for name, module in layers.items():
            parent, _, child = name.rpartition(".")
            setattr(body.get_submodule(parent) if parent else body, child, module)

    put(modules)
    try:
        yield
    finally:
        put(current)


def _windows(adapter, tokenizer, calib_text, fingerprint, originals, body) -> tuple:
    """(windows (n, L), report): the calibration windows of the linear layers' statistics
    (export/activation_stats.py: --calib-text's, else the original model's own samples,
    cached), computed with the original layers in place."""
    from tensorgpt.export.activation_stats import calibration_windows

    with _swapped(body, originals):
        windows, _, report = calibration_windows(adapter, tokenizer, calib_text, fingerprint)
    return windows, report


def heal_linears(
    adapter,
    tokenizer,
    originals: dict[str, nn.Module],
    steps: int,
    calib_text: str | None,
    fingerprint: str,
    through_q4: bool,
    checkpoint: str | Path | None = None,
    progress: bool = True,
    on_step: Callable[[int], None] | None = None,
    config: HealConfig | None = None,
) -> dict:
    """Fit the layers `--linears` replaced (in place in adapter.model) to the original model.

    originals: {name relative to the decoder body: module} as it was before compression (every
        module; the ones since replaced are the targets' layers). through_q4: heal through q4
        (module docstring). config: the loop's settings (default: `steps` of one window of
        WINDOW tokens at LR). Returns the manifest's `linears.healing` report; the parameters
        are put back as they were when healing does not lower the held-out KL."""
    from tensorgpt.export.calibration import window_for

    body = adapter.decoder_body()
    model = adapter.model
    replaced = {n: m for n, m in originals.items() if body.get_submodule(n) is not m}
    replaced = {n: m for n, m in replaced.items() if type(m) is nn.Linear}
    if not replaced:
        raise ValueError("--linear-heal-steps: --linears replaced no layer (nothing to heal)")
    config = config or HealConfig(steps, WINDOWS_PER_STEP, window_for(adapter), LR)
    config.validate()
    windows, report = _windows(adapter, tokenizer, calib_text, fingerprint, replaced, body)
    windows, held_out = split_held_out(windows)
    saten = [m for m in body.modules() if isinstance(m, SatenLinear)]
    healable = HealableLinears(_healed_tensors(body, list(replaced)), through_q4)
    start = healable.state()
    key = _key(start, windows, held_out, config, through_q4)
    path = Path(checkpoint) if checkpoint else default_checkpoint_dir() / f"linears-{key}.pt"
    optimiser = Optimiser(healable, config, path, key)

    def loss(x: torch.Tensor) -> torch.Tensor:
        with _swapped(body, replaced):
            target = original_log_probs(model, x)
        with parametrize.cached():  # each q4 decode once per forward, not once per use
            return kl(target, model(x, use_cache=False).logits)

    def held_out_kl() -> float:
        with torch.no_grad():
            return float(np.mean([loss(torch.from_numpy(w)[None]) for w in held_out]))

    for m in saten:
        m.dense_forward = True
    try:
        fit = optimiser.resume()
        resumed_from = fit.step
        run_steps(model, loss, windows, optimiser, fit, config, progress, on_step)
        fitted = healable.state()
        kl_after = held_out_kl()
        healable.load_state(start)
        kl_before = held_out_kl()
        kept = kl_after < kl_before
        healable.load_state(fitted if kept else start)
        healable.finish()
    finally:
        for m in saten:
            m.dense_forward = False
    k = min(8, len(fit.history))
    return {
        "steps": config.steps,
        "tokens_per_step": int(config.windows_per_step * windows.shape[1]),
        "calibration_windows": int(len(windows)),
        **report,
        "parameters": int(sum(p.numel() for p in healable.parameters())),
        "through_q4": bool(healable.on_grid),
        "held_out_kl_before": kl_before,
        "held_out_kl_after": kl_after,
        "kept": bool(kept),
        "kl_first_steps": float(np.mean(fit.history[:k])) if fit.history else None,
        "kl_last_steps": float(np.mean(fit.history[-k:])) if fit.history else None,
        "resumed_from_step": resumed_from,
        "seconds": round(fit.seconds, 1),
        "checkpoint": str(path),
        "config": dataclasses.asdict(config),
    }


def _key(start: dict, windows, held_out, config: HealConfig, through_q4: bool) -> str:
    """The checkpoint's key: the compressed parameters, the text and the settings."""
    h = hashlib.sha256()
    for name, t in start.items():
        h.update(name.encode())
        h.update(t.numpy().tobytes())
    h.update(np.ascontiguousarray(windows, np.int64).tobytes())
    h.update(np.ascontiguousarray(held_out, np.int64).tobytes())
    h.update(json.dumps([dataclasses.asdict(config), through_q4], sort_keys=True).encode())
    return h.hexdigest()[:24]
