"""The fitting loop every kind of healing shares: fit some compressed parameters so that the
model using them predicts what the original model predicts, every other weight frozen.

    min  E_t  KL( p_orig(. | x_<t)  ||  p_healed(. | x_<t) )

over windows of a calibration text (never an evaluation text). Two users: the transform-coded
table (export/healing.py, `--heal-steps`) and the compressed linear layers
(export/linears/heal.py, `--linear-heal-steps`). Each gives a "healable" (its parameters, a
state to checkpoint) and a loss on a batch of windows; this file runs Adam with warm-up and
cosine decay, a progress bar, and a checkpoint every few steps and on Ctrl-C, keyed by the
content of every input, so rerunning the same command resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tensorgpt.common.files import write_atomic


@dataclasses.dataclass(frozen=True)
class HealConfig:
    steps: int = 120  # optimiser steps of 2 x 512 tokens: ~0.45 passes over wikitext-2 valid
    windows_per_step: int = 2
    window: int = 512
    lr: float = 0.01  # relative to each tensor's scale (export/healing.py, linears/heal.py)
    seed: int = 0
    checkpoint_every: int = 8

    def validate(self) -> None:
        if self.steps < 1:
            raise ValueError(f"--heal-steps must be >= 1, got {self.steps}")
        if self.windows_per_step < 1 or self.window < 2:
            raise ValueError("healing: windows_per_step >= 1 and window >= 2 required")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"healing: lr must be > 0, got {self.lr}")


def default_checkpoint_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tensorgpt" / "heal"


def _torch():
    import torch

    return torch


def kl(target, logits):
    """Mean over positions of KL(p || q): target = log p (..., V), logits of q (..., V)."""
    torch = _torch()
    return (target.exp() * (target - torch.log_softmax(logits, -1))).sum(-1).mean()


def original_log_probs(model, x):
    """Log next-token distributions of the original model (the healing target), no grad."""
    torch = _torch()
    with torch.no_grad():
        return torch.log_softmax(model(x, use_cache=False).logits, -1)


@dataclasses.dataclass
class Fit:
    """What a checkpoint holds besides the parameters: where the fit is."""

    step: int = 0
    history: list[float] = dataclasses.field(default_factory=list)
    seconds: float = 0.0


class Optimiser:
    """Adam with warm-up and cosine decay over `config.steps`, plus its checkpoint file.

    healable: anything with `parameters()`, `state()` and `load_state(state)` (HealableTable
    here, the compressed linear layers in export/linears/heal.py); one with
    `param_groups(lr)` sets each tensor's own learning rate."""

    def __init__(self, healable, config: HealConfig, path: Path, key: str):
        torch = _torch()
        self.healable, self.path, self.key = healable, path, key
        groups = getattr(healable, "param_groups", None)
        params = groups(config.lr) if groups is not None else healable.parameters()
        self.opt = torch.optim.Adam(params, lr=config.lr)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt,
            lambda s: min(1.0, (s + 1) / 8) * 0.5 * (1 + math.cos(math.pi * s / config.steps)),
        )

    def resume(self) -> Fit:
        """The fit saved under this key, or a fresh one (another key's file is ignored)."""
        if self.path.is_file():
            state = _torch().load(self.path, weights_only=False)
            if state.get("key") == self.key:
                self.healable.load_state(state["params"])
                self.opt.load_state_dict(state["opt"])
                self.sched.load_state_dict(state["sched"])
                return Fit(state["step"], list(state["history"]), state["seconds"])
        return Fit()

    def save(self, fit: Fit) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "key": self.key,
            "params": self.healable.state(),
            "opt": self.opt.state_dict(),
            "sched": self.sched.state_dict(),
            "step": fit.step,
            "history": fit.history,
            "seconds": fit.seconds,
        }
        # straight to the file: the linear layers' state is hundreds of MB, no copy in memory
        write_atomic(self.path, lambda tmp: _torch().save(state, tmp))


def split_held_out(windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(training windows, held-out windows): the last tenth, at least 1 and at most 8."""
    if len(windows) < 2:
        raise ValueError("healing: the calibration text needs at least 2 windows (one held out)")
    n_held = max(1, min(8, len(windows) // 10))
    return windows[:-n_held], windows[-n_held:]


def run_steps(
    model,
    loss: Callable,
    windows: np.ndarray,
    optimiser: Optimiser,
    fit: Fit,
    config: HealConfig,
    progress: bool,
    on_step: Callable[[int], None] | None,
) -> None:
    """Steps fit.step .. config.steps of `loss(x)` (x: (windows_per_step, L) token ids), every
    weight of `model` but the healable's frozen; checkpoints every `checkpoint_every` steps
    and on Ctrl-C (then re-raised with how to resume)."""
    torch = _torch()
    order = np.random.default_rng(config.seed).permutation(
        np.resize(np.arange(len(windows)), config.steps * config.windows_per_step)
    )
    trained = {id(p) for p in optimiser.healable.parameters()}
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in frozen:
        p.requires_grad_(id(p) in trained)
    bar = None
    if progress and fit.step < config.steps:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.steps, initial=fit.step, desc="healing", unit="step")
    opt, sched = optimiser.opt, optimiser.sched
    try:
        while fit.step < config.steps:
            t0 = time.perf_counter()
            picked = order[
                fit.step * config.windows_per_step : (fit.step + 1) * config.windows_per_step
            ]
            value = loss(torch.from_numpy(windows[picked]))
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
            sched.step()
            fit.step += 1
            fit.history.append(value.item())
            fit.seconds += time.perf_counter() - t0
            if bar is not None:
                bar.update(1)
                bar.set_postfix(kl=f"{np.mean(fit.history[-8:]):.4f}")
            if fit.step % config.checkpoint_every == 0 or fit.step == config.steps:
                optimiser.save(fit)
            if on_step is not None:
                on_step(fit.step)
    except KeyboardInterrupt:
        optimiser.save(fit)
        raise KeyboardInterrupt(
            f"healing stopped at step {fit.step}/{config.steps}, saved to {optimiser.path}; "
            "rerun the same command to resume"
        ) from None
    finally:
        if bar is not None:
            bar.close()
        for p, flag in frozen:
            p.requires_grad_(flag)
