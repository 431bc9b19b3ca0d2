"""The plan of `--quantize mixed` (export/quantizers/mixed.py): one block format per body
matrix under a bits budget, each matrix quantized by GPTQ onto its format's grid.

    formats   q4   4-bit blocks of 32, fp16 scale + minimum        5.0 bits per weight
              q3   3-bit blocks of 32, fp16 scale + minimum        4.0
              q3b64  3-bit blocks of 64, fp16 scale + minimum      3.5
              (a format whose block does not divide a matrix's K is not offered to it)
    inputs    calibration windows as --linears (export/activation_stats.py: --calib-text, else
              text the model generates; never the evaluation text), the body's nn.Linear layers
              grouped by shared input (q/k/v, gate/up, o, down), and per group the
              loss-weighted input autocorrelation C_g = (1/n) sum_t s_t x_t x_t^T with each
              layer's share f_j of the group's output-gradient energy
              (`fisher_autocorr_on_windows`; cached)
    GPTQ      per matrix and format, with H = C_g (tt_ops/gptq.py): the output error of the
              rounding, weighted by the loss, is compensated inside each matrix
    estimate  the loss increase of storing W_j as Q: 1/2 f_j tr((W - Q)^T C_g (W - Q)) per
              position (the second-order term export/activation_stats.py derives for
              espace-fisher; one unit, loss per position, for every matrix)
    budget    bits x the matrices' weights / 8 bytes; tt_ops/format_allocation.py picks the
              formats with the least estimated loss that fit

A Q4_1 GGUF source's weights lie on the q4 grid: their q4 GPTQ reproduces them exactly
(estimate 0), so at 5.0 bits the file is today's q4 file.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BlockFormat:
    name: str
    levels: int  # codes 0..levels-1
    block: int  # weights of K sharing one fp16 scale and minimum
    code_bits: int

    def bytes(self, k: int, n: int) -> float:
        return k * n * (self.code_bits + 32 / self.block) / 8


FORMATS = (
    BlockFormat("q4", 16, 32, 4),
    BlockFormat("q3", 8, 32, 3),
    BlockFormat("q3b64", 8, 64, 3),
)
MIN_BITS = min(f.code_bits + 32 / f.block for f in FORMATS)
MAX_BITS = max(f.code_bits + 32 / f.block for f in FORMATS)


def check_bits(bits: float) -> None:
    if not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"--weight-bits must be in [{MIN_BITS}, {MAX_BITS}], got {bits}")


def _fit(fmt: BlockFormat):
    from tensorgpt.tt_ops.q3_blocks import fit_q3_blocks
    from tensorgpt.tt_ops.q4_grid import fit_q4_grid

    return fit_q4_grid if fmt.levels == 16 else fit_q3_blocks


@dataclass
class Planned:
    """One matrix's chosen format: codes (K/32, 32, N), d and m (K/block, N) fp16."""

    fmt: BlockFormat
    codes: np.ndarray
    scale: np.ndarray
    minimum: np.ndarray
    loss: float

    def decoded(self) -> np.ndarray:
        from tensorgpt.tt_ops.q4_grid import decode_blocks

        k, n = self.codes.shape[0] * 32, self.codes.shape[2]
        q = self.codes.reshape(k // self.fmt.block, self.fmt.block, n)
        return decode_blocks(q, self.scale, self.minimum).reshape(k, n)


def plan_mixed(adapter, tokenizer, bits: float, calib_text: str | None, log) -> tuple[dict, dict]:
    """({weight_key of the (K, N) weight: Planned}, the manifest's report) for the body's
    nn.Linear layers, under `bits` bits per weight on average."""
    import torch

    from tensorgpt.common.progress import track
    from tensorgpt.export.activation_stats import (
        autocorr_settings,
        calibration_windows,
        linear_autocorr,
    )
    from tensorgpt.export.calibration import model_fingerprint
    from tensorgpt.export.linears.factored import input_groups
    from tensorgpt.export.weight_blocks import weight_key
    from tensorgpt.tt_ops.format_allocation import allocate_formats
    from tensorgpt.tt_ops.gptq import inverse_cholesky

    check_bits(bits)
    body = adapter.decoder_body()
    vocab = adapter.shape().vocab_size
    groups = input_groups(adapter.model, body, (torch.arange(8) * 7919 % vocab)[None])
    fingerprint = model_fingerprint(adapter, tokenizer)
    windows, source, report = calibration_windows(adapter, tokenizer, calib_text, fingerprint)
    firsts = [g[0] for g in groups]
    settings = autocorr_settings(fingerprint, firsts, windows, source, fisher_groups=groups)
    stats = linear_autocorr(adapter, firsts, windows, settings, fisher_groups=groups)

    names, keys, options = [], [], []
    steps = track(list(enumerate(groups)), "[export] mixed: GPTQ per group", unit="group")
    for g, group in steps:
        # layers reading one input share H: one GPTQ over their stacked columns (GPTQ treats
        # every output column alike), split again per layer
        ws = [body.get_submodule(name).weight.detach().float().numpy().T for name in group]
        if ws[0].shape[0] % 32:
            continue  # stays on the plain q4 path
        w = np.concatenate(ws, axis=1)
        c = stats[f"c{g}"].astype(np.float64)
        splits = np.cumsum([x.shape[1] for x in ws])[:-1]
        u = inverse_cholesky(c)
        per_format = [_quantize(w, u, fmt, splits) for fmt in FORMATS]
        for j, (name, wj) in enumerate(zip(group, ws, strict=True)):
            share = float(stats[f"f{g}"][j])
            found = []
            for parts in per_format:
                if parts is None:  # not offered: never smaller than q4, never chosen
                    found.append(Planned(FORMATS[0], per_format[0][j].codes, None, None, np.inf))
                    continue
                e = parts[j].decoded().astype(np.float64) - wj
                parts[j].loss = 0.5 * share * float(np.sum((c @ e) * e))
                found.append(parts[j])
            names.append(name)
            keys.append(weight_key(wj))
            options.append(found)
    if not options:
        raise ValueError("--quantize mixed: the body has no nn.Linear layer with K % 32 == 0")
    loss = np.array([[p.loss for p in row] for row in options])
    nbytes = np.array([[p.fmt.bytes(*w_shape(p)) for p in row] for row in options])
    params = sum(np.prod(w_shape(row[0])) for row in options)
    choice = allocate_formats(loss, nbytes, bits * params / 8)
    plan = {key: row[c] for key, row, c in zip(keys, options, choice, strict=True)}
    chosen_bytes = float(nbytes[np.arange(len(choice)), choice].sum())
    counts = {f.name: int(np.sum(choice == i)) for i, f in enumerate(FORMATS)}
    log(
        f"mixed: {', '.join(f'{v} {k}' for k, v in counts.items())}; "
        f"{8 * chosen_bytes / params:.3f} bits per weight (budget {bits}), "
        f"estimated loss increase {loss[np.arange(len(choice)), choice].sum():.4f} nats/token"
    )
    report |= {
        "bits_budget": bits,
        "bits_per_weight": round(8 * chosen_bytes / params, 4),
        "formats": counts,
        "estimated_loss_increase": float(loss[np.arange(len(choice)), choice].sum()),
        "calibration_tokens": int(stats["n_pos"]),
        "matrices": {
            n: {"format": FORMATS[c].name, "estimated_loss": float(loss[i, c])}
            for i, (n, c) in enumerate(zip(names, choice, strict=True))
        },
    }
    return plan, report


def _quantize(w: np.ndarray, u: np.ndarray, fmt: BlockFormat, splits) -> list[Planned] | None:
    """GPTQ of the stacked (K, N) weight onto `fmt`, split into the layers' columns (None:
    the format's block does not divide K)."""
    from tensorgpt.tt_ops.gptq import gptq_blocks
    from tensorgpt.tt_ops.q4_grid import fit_q4_grid

    k, n = w.shape
    if k % fmt.block:
        return None
    if fmt.levels == 16 and fmt.block == 32:  # already on the grid (a Q4_1 source): exact
        q, d, m, exact = fit_q4_grid(w.reshape(k // 32, 32, n))
        if not exact.all():
            q, d, m = gptq_blocks(w, u, fit_q4_grid, fmt.levels, fmt.block)
    else:
        q, d, m = gptq_blocks(w, u, _fit(fmt), fmt.levels, fmt.block)
    q = q.reshape(k // 32, 32, n)
    return [
        Planned(fmt, qj, dj, mj, 0.0)
        for qj, dj, mj in zip(
            np.split(q, splits, axis=2), np.split(d, splits, axis=1), np.split(m, splits, axis=1)
        )
    ]


def w_shape(p: Planned) -> tuple[int, int]:
    return p.codes.shape[0] * 32, p.codes.shape[2]
