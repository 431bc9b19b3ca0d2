"""--linears espace|svd (export/linears/) on a tiny local checkpoint: the factored layers are
what the file runs, quantized and checked against PyTorch; one projection per shared input."""

from __future__ import annotations

import json

import onnx
import pytest

from tensorgpt.cli import main as cli_main
from tensorgpt.common.contract import MANIFEST_FILE, MODEL_FILE


def _export(folder, out, *flags):
    return cli_main(["export", str(folder), str(out), *flags])


def test_espace_with_q4_is_factored_quantized_and_verified(tiny_llama, tmp_path):
    from tests.conftest import SHARED_DATA

    text = tmp_path / "calib.txt"
    valid = SHARED_DATA / "valid.txt"
    text.write_text(
        valid.read_text(encoding="utf-8")[:40_000] if valid.is_file() else "a b c. " * 4000
    )
    out = tmp_path / "out"
    flags = ["--linears", "espace", "--linear-ratio", "0.85", "--quantize", "q4"]
    flags += ["--linear-heal-steps", "2"]  # healed through q4 (tests/export/test_linear_healing.py)
    assert _export(tiny_llama, out, *flags, "--calib-text", str(text)) == 0
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    lin = manifest["linears"]
    assert manifest["verification"]["passed"]
    assert lin["stored_params"] <= 0.85 * lin["original_params"]
    factored = [g for g in lin["groups"] if g["rank"] is not None]
    assert factored and all(g["rank"] % lin["step"] == 0 for g in factored)
    assert lin["calibration"]["calibration"] == "text"
    assert lin["healing"]["steps"] == 2 and lin["healing"]["through_q4"]
    # every factor is a 4-bit weight: one A per group plus one B per layer, and the dense rest
    dense_layers = sum(len(g["layers"]) for g in lin["groups"] if g["rank"] is None)
    weights = sum(1 + len(g["layers"]) for g in factored) + dense_layers
    assert manifest["weight_quantization"]["weights"] == weights
    # healed on q4's grid: q4 finds every factor already on it (the tiny model's dense
    # fp32 layers are not)
    assert manifest["weight_quantization"]["exact_weights"] == weights - dense_layers
    # the shared projection is computed once per group: one MatMul reads it
    shared = [g for g in factored if len(g["layers"]) > 1]
    assert lin["deduplicated"]["matmuls"] == sum(len(g["layers"]) - 1 for g in shared)
    graph = onnx.load(str(out / MODEL_FILE)).graph
    readers: dict[str, int] = {}
    for node in graph.node:
        if node.op_type == "MatMul":
            readers[node.input[1]] = readers.get(node.input[1], 0) + 1
    assert max(readers.values()) == 1


def test_svd_baseline_needs_no_calibration(tiny_llama, tmp_path):
    out = tmp_path / "out"
    assert _export(tiny_llama, out, "--linears", "svd", "--linear-ratio", "0.9") == 0
    lin = json.loads((out / MANIFEST_FILE).read_text())["linears"]
    assert lin["calibration"] is None
    assert all(len(g["layers"]) == 1 for g in lin["groups"])
    assert 0 < lin["stored_ratio"] <= 0.9


@pytest.mark.parametrize(
    ("flags", "word"),
    [
        (["--linear-ratio", "0.5"], "--linear-ratio needs --linears"),
        (["--linears", "espace"], "needs --linear-ratio"),
        (["--linear-heal-steps", "3"], "--linear-heal-steps needs --linears"),
        (["--linears", "svd", "--linear-ratio", "1.5"], "(0, 1)"),
        (["--linears", "svd", "--linear-ratio", "0.05"], "smallest factorization"),
    ],
)
def test_bad_linear_options(tiny_llama, tmp_path, capsys, flags, word):
    code = _export(tiny_llama, tmp_path / "out", *flags)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("tensorgpt export: error:")]
    assert len(errors) == 1 and word in errors[0], err
    assert not (tmp_path / "out").exists()


def test_full_rank_factors_reproduce_the_model(tiny_llama):
    """Sanity of the factored path: with every direction kept (k = in), the loss-weighted
    bases and B = W P give the original logits back; the loss-scale errors add up to
    1/2 E[s_t sum_j share_j ||W_j x_t||^2] over all directions (exact additivity)."""
    import numpy as np
    import torch

    from tensorgpt.export.activation_stats import fisher_autocorr_on_windows
    from tensorgpt.export.linears.factored import input_groups, replace_group
    from tensorgpt.export.load import load
    from tensorgpt.models.base import adapter_for
    from tensorgpt.tt_ops.rank_allocation import espace_directions

    loaded = load(str(tiny_llama))
    adapter = adapter_for(loaded.model)
    body = adapter.decoder_body()
    vocab = adapter.shape().vocab_size
    windows = (np.arange(2 * 48).reshape(2, 48) * 7919 + 13) % vocab
    groups = input_groups(loaded.model, body, torch.from_numpy(windows[:1]))
    stats = fisher_autocorr_on_windows(adapter, groups, windows)
    ids = torch.from_numpy(windows[1:])
    with torch.no_grad():
        before = loaded.model(ids, use_cache=False).logits
    for i, names in enumerate(groups):
        weights = [body.get_submodule(n).weight.detach().double().numpy() for n in names]
        w = np.concatenate(weights)
        rows = np.repeat(stats[f"f{i}"], [x.shape[0] for x in weights])
        d = espace_directions(stats[f"c{i}"], w)  # the basis; errors below with row weights
        lam = np.einsum("ij,jk,ki->i", d.basis.T, stats[f"c{i}"].astype(np.float64), d.basis)
        total = float((rows[:, None] * np.square(w @ d.basis)).sum(0) @ lam) / 2
        c = stats[f"c{i}"].astype(np.float64)
        assert np.isclose(total, float(np.einsum("ij,jk,ik,i->", w, c, w, rows)) / 2, rtol=1e-4)
        splits = np.cumsum([x.shape[0] for x in weights])[:-1]
        replace_group(body, names, d.basis.T, np.split(w @ d.basis, splits))
    with torch.no_grad():
        after = loaded.model(ids, use_cache=False).logits
    assert float((after - before).abs().max()) < 1e-4


def test_espace_fisher_ranks_by_loss_and_verifies(tiny_llama, tmp_path):
    text = tmp_path / "calib.txt"
    text.write_text("".join(f"line {i} says {i * 7 % 13} things.\n" for i in range(2000)))
    out = tmp_path / "out"
    flags = ["--linears", "espace-fisher", "--linear-ratio", "0.8", "--calib-text", str(text)]
    assert _export(tiny_llama, out, *flags) == 0
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    lin = manifest["linears"]
    assert manifest["verification"]["passed"]
    assert lin["calibration"]["loss_weighted"] and lin["calibration"]["calibration"] == "text"
    assert lin["stored_params"] <= 0.8 * lin["original_params"]
    assert any(g["rank"] is not None for g in lin["groups"])
