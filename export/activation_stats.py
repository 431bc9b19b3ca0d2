"""Input autocorrelations of linear layers on calibration tokens, for --linears espace.

    C_g = (1 / n) sum over positions t of x_t x_t^T      x_t (in,): the input of group g

One forward per window (no backward), a pre-hook on each group's first layer adds X^T X
(float32 products, float64 sums); --linears espace-fisher weights each position by the loss
gradients at the group's outputs instead (one backward per window: `fisher_autocorr_on_windows`). Tokens: `calib_text` (never the evaluation text), else
the windows the model generates for --method tc (export/generated_calibration.py, same
settings and cache entry). Cached under ~/.cache/tensorgpt/calibration by the model's
weights, the text and the layer names (export/calibration.py's `cached_arrays`).
"""

from __future__ import annotations

import hashlib

import numpy as np

from tensorgpt.export.calibration import WINDOW, cached_arrays, default_cache_dir, window_for

# 32 windows of 512 tokens: 16k positions, ten times the widest input (1536) of SmolLM2
TEXT_WINDOWS = 32


def autocorr_on_windows(
    adapter, layers: list[str], windows: np.ndarray, per_token: bool = False
) -> dict[str, np.ndarray]:
    """{"c0".."c{G-1}": C_g (in, in), "n_pos"} over token windows (n, L).

    per_token: C = E[x x^T / ||x||^2], every position weighted alike. Why: with the raw C,
    on SmolLM2-135M 32 of the 1536 input directions of layer 11's down_proj carry 99.94% of
    lam_i ||W u_i||^2, and the model breaks at ranks that measure calls nearly lossless
    (docs/results.md); positions with very large inputs owning C would explain it."""
    import torch

    from tensorgpt.common.progress import track

    body = adapter.decoder_body()
    sums: list[torch.Tensor | None] = [None] * len(layers)

    def hook(i: int):
        def add(module, args) -> None:
            x = args[0].detach().reshape(-1, args[0].shape[-1]).float()
            if per_token:
                x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-30)
            xtx = (x.T @ x).double()  # float32 products, float64 sums
            sums[i] = xtx if sums[i] is None else sums[i] + xtx

        return add

    hooks = [body.get_submodule(n).register_forward_pre_hook(hook(i)) for i, n in enumerate(layers)]
    n_pos = 0
    try:
        rows = np.asarray(windows, dtype=np.int64)
        with torch.no_grad():
            for row in track(rows, "[export] linear-layer calibration (forward)", unit="window"):
                adapter.model(torch.from_numpy(row)[None], use_cache=False)
                n_pos += row.size
    finally:
        for h in hooks:
            h.remove()
    return _autocorrelations(sums, n_pos)


def _autocorrelations(sums: list, n_pos: int) -> dict[str, np.ndarray]:
    """{"c{i}": sums[i] / n_pos as float32, "n_pos"}; every layer must have been reached."""
    if any(s is None for s in sums):
        raise ValueError("linear-layer calibration: a layer was not reached by the forward pass")
    # stored as float32: half the cache (about 0.4 GB for SmolLM2-135M), enough for eigh
    out = {f"c{i}": (s / n_pos).float().numpy() for i, s in enumerate(sums)}
    return {**out, "n_pos": np.array(n_pos)}


def fisher_autocorr_on_windows(
    adapter, groups: list[list[str]], windows: np.ndarray
) -> dict[str, np.ndarray]:
    """Loss-weighted input autocorrelations, for --linears espace-fisher:

        C_g = (1 / n) sum_t s_t x_t x_t^T,   s_t = sum over the group's layers j of a_jt,
        a_jt = ||dL/dy_jt||^2 / out_j        (y_j = W_j x: layer j's output at position t)
        "f{g}" (J,): the shares E[a_j] / E[s] of the group's layers (sum 1)

    L: the summed next-token cross-entropy of each window (one backward per window; the
    gradients are taken at the layers' outputs only, no weight gradients). Why: a dropped
    input part r_t changes layer j's output by W_j r_t, and to second order the loss by
    1/2 (dL/dy_j . W_j r_t)^2 (the first-order term averages to zero on text the model
    generates itself); with gradients isotropic per position that is 1/2 a_jt ||W_j r_t||^2,
    so positions the loss does not see (huge inputs that a norm squashes) stop owning C, and
    every group's error is in the same unit, loss per position (tt_ops/rank_allocation.py)."""
    import torch

    from tensorgpt.common.progress import track

    body = adapter.decoder_body()
    sums: list[torch.Tensor | None] = [None] * len(groups)
    shares = [np.zeros(len(g)) for g in groups]
    inputs: dict[int, torch.Tensor] = {}
    outputs: dict[tuple[int, int], torch.Tensor] = {}

    def keep_input(i: int):
        def hook(module, args) -> None:
            inputs[i] = args[0].detach().reshape(-1, args[0].shape[-1]).float()

        return hook

    def keep_output(key: tuple[int, int]):
        def hook(module, args, out) -> None:
            outputs[key] = out

        return hook

    hooks = [
        adapter.token_embedding().register_forward_hook(
            lambda m, args, out: out.detach().requires_grad_(True)
        )
    ]
    for i, names in enumerate(groups):
        hooks.append(body.get_submodule(names[0]).register_forward_pre_hook(keep_input(i)))
        for j, name in enumerate(names):
            hooks.append(body.get_submodule(name).register_forward_hook(keep_output((i, j))))
    n_pos = 0
    try:
        rows = np.asarray(windows, dtype=np.int64)
        steps = track(rows, "[export] loss-weighted calibration (backward)", unit="window")
        with torch.enable_grad():  # gradients at the layers' outputs only
            for row in steps:
                ids = torch.from_numpy(row)[None]
                logits = adapter.model(ids, use_cache=False).logits[0, :-1].float()
                loss = torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum")
                keys = list(outputs)
                grads = torch.autograd.grad(loss, [outputs[k] for k in keys])
                weight: dict[int, torch.Tensor] = {}
                for (i, j), g in zip(keys, grads, strict=True):
                    a = g.detach().reshape(-1, g.shape[-1]).float().square().mean(1)  # (n,)
                    shares[i][j] += float(a.sum())
                    weight[i] = a if i not in weight else weight[i] + a
                for i, s in weight.items():
                    x = inputs[i]
                    xtx = (x.T @ (x * s[:, None])).double()
                    sums[i] = xtx if sums[i] is None else sums[i] + xtx
                inputs.clear()
                outputs.clear()
                n_pos += row.size
    finally:
        for h in hooks:
            h.remove()
    out = _autocorrelations(sums, n_pos)
    return out | {f"f{i}": f / max(f.sum(), 1e-300) for i, f in enumerate(shares)}


def calibration_windows(
    adapter, tokenizer, calib_text: str | None, fingerprint: str
) -> tuple[np.ndarray, dict, dict]:
    """(token windows (n, L), their cache key, the manifest's calibration report): windows of
    `calib_text` (never the evaluation text), else the windows the model generates for --method
    tc's default (export/generated_calibration.py, same settings and cache entry)."""
    if calib_text is not None:
        from tensorgpt.common.files import read_text, stored_path

        text = read_text(calib_text, "--calib-text")
        ids = np.asarray(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=np.int64)
        window = min(window_for(adapter), len(ids))
        if window < 2:
            raise ValueError("--calib-text: fewer than 2 tokens")
        n = max(1, min(TEXT_WINDOWS, len(ids) // window))
        starts = np.linspace(0, len(ids) - window, n).astype(int)
        windows = np.stack([ids[s : s + window] for s in starts])
        source = {"text_sha256": hashlib.sha256(text.encode()).hexdigest()}
        return windows, source, {"calibration": "text", "calibration_text": stored_path(calib_text)}
    from tensorgpt.export.generated_calibration import GenerationConfig, generated_stats

    context = adapter.shape().max_position_embeddings or 2 * WINDOW
    config = GenerationConfig(length=max(2, min(WINDOW, context // 2)))
    windows = generated_stats(adapter, tokenizer, config, fingerprint, default_cache_dir())["ids"]
    return (
        windows,
        {"generated": [config.sequences, config.length, config.seed]},
        {"calibration": "generated"},
    )


def autocorr_settings(
    fingerprint: str,
    layers: list[str],
    windows: np.ndarray,
    source: dict,
    per_token: bool = False,
    fisher_groups: list[list[str]] | None = None,
) -> dict:
    """The cache key of `linear_autocorr` (and of activation_eig's eigenpairs)."""
    settings = {"model": fingerprint, "layers": layers, "windows": windows.shape, **source}
    if per_token:  # (absent for the raw C: keeps the key of caches written before the option)
        settings["per_token"] = True
    if fisher_groups is not None:
        if [g[0] for g in fisher_groups] != layers:
            raise ValueError("fisher_groups must start with the layers given")
        settings["fisher_groups"] = fisher_groups
    return settings


def linear_autocorr(
    adapter,
    layers: list[str],
    windows: np.ndarray,
    settings: dict,
    per_token: bool = False,
    fisher_groups: list[list[str]] | None = None,
) -> dict[str, np.ndarray]:
    """`autocorr_on_windows` (or `fisher_autocorr_on_windows` when fisher_groups is given),
    cached under "linear-autocorr" by `settings` (autocorr_settings)."""

    def make() -> dict[str, np.ndarray]:
        if fisher_groups is not None:
            return fisher_autocorr_on_windows(adapter, fisher_groups, windows)
        return autocorr_on_windows(adapter, layers, windows, per_token)

    return cached_arrays(default_cache_dir(), "linear-autocorr", settings, make)


def activation_eig(
    adapter,
    tokenizer,
    layers: list[str],
    calib_text: str | None,
    fingerprint: str,
    per_token: bool = False,
    fisher_groups: list[list[str]] | None = None,
) -> tuple[list[tuple[np.ndarray, ...]], dict]:
    """(eigenpairs (lam, U) of C per layer in `layers`, calibration report), cached:
    C under "linear-autocorr", its eigenpairs (float64 eigh, stored float32) under
    "linear-eig" (minutes of eigh for SmolLM2 on 2 cores, the same for every ratio).

    fisher_groups (every layer of each group, first ones = `layers`): the loss-weighted C of
    `fisher_autocorr_on_windows` instead, and (lam, U, shares of the group's layers)."""
    windows, source, report = calibration_windows(adapter, tokenizer, calib_text, fingerprint)
    settings = autocorr_settings(fingerprint, layers, windows, source, per_token, fisher_groups)

    def eig() -> dict[str, np.ndarray]:
        from tensorgpt.common.progress import track

        arrays = linear_autocorr(adapter, layers, windows, settings, per_token, fisher_groups)
        out = {"n_pos": arrays["n_pos"]}
        for i in track(range(len(layers)), "[export] eigenvectors of C", unit="group"):
            c = arrays[f"c{i}"].astype(np.float64)
            lam, u = np.linalg.eigh((c + c.T) / 2)
            out[f"lam{i}"], out[f"u{i}"] = lam, u.astype(np.float32)
            if f"f{i}" in arrays:
                out[f"f{i}"] = arrays[f"f{i}"]
        return out

    arrays = cached_arrays(default_cache_dir(), "linear-eig", settings, eig)
    report["calibration_tokens"] = int(arrays["n_pos"])
    report["per_token"] = per_token
    report["loss_weighted"] = fisher_groups is not None
    extra = (lambda i: (arrays[f"f{i}"],)) if fisher_groups is not None else (lambda i: ())
    eigs = [(arrays[f"lam{i}"], arrays[f"u{i}"], *extra(i)) for i in range(len(layers))]
    return eigs, report
