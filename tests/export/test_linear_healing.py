"""--linear-heal-steps (export/linears/heal.py) on a tiny local checkpoint: healing the
factored layers lowers the KL to the original model on held-out text, runs through q4, and
an interrupted fit resumes from its checkpoint. The export with healing (parity of the healed
q4 file) is tests/export/test_linears.py's espace test."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tensorgpt.export.heal_loop import HealConfig
from tensorgpt.export.linears.base import LinearSpec, compress_linears
from tensorgpt.export.linears.factored import FactoredLinear
from tensorgpt.export.linears.heal import heal_linears, on_q4_grid
from tensorgpt.models import adapter_for
from tensorgpt.tt_ops.q4_grid import fit_q4_grid

SMALL = HealConfig(steps=6, windows_per_step=2, window=64, lr=2e-3, checkpoint_every=2)


def _text(tmp_path):
    """(calibration file: the first 30k characters, the text; its rest is never read)."""
    from tests.conftest import SHARED_DATA

    valid = SHARED_DATA / "valid.txt"
    if valid.is_file():
        text = valid.read_text(encoding="utf-8")[:60_000]
    else:  # a seeded word salad: a tiny model has something to predict either way
        words = [
            "the",
            "of",
            "a",
            "to",
            "in",
            "is",
            "was",
            "and",
            "for",
            "on",
            "with",
            "as",
            "by",
            "at",
            "from",
            "it",
            "an",
            "be",
        ]
        rng = np.random.default_rng(0)
        text = " ".join(rng.choice(words, 12_000, p=np.linspace(2, 0.2, 18) / 19.8))
    path = tmp_path / "calib.txt"
    path.write_text(text[:30_000])
    return path, text


def _compressed(folder, calib: str, method: str = "espace", ratio: float = 0.85):
    """(model, tokenizer, adapter, the body's modules before compression)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    tok = AutoTokenizer.from_pretrained(str(folder))
    adapter = adapter_for(model)
    originals = dict(adapter.decoder_body().named_modules())
    compress_linears(adapter, tok, LinearSpec(method, ratio, calib), "test", lambda _: None)
    return model, tok, adapter, originals


def _held_out_kl(model, adapter, originals, tok, text: str) -> float:
    """KL(original || compressed) on text neither calibration nor healing read."""
    from tensorgpt.export.linears.heal import _swapped

    x = torch.tensor(tok(text)["input_ids"][:256]).view(4, 64)
    body = adapter.decoder_body()
    replaced = {n: m for n, m in originals.items() if body.get_submodule(n) is not m}
    with torch.no_grad():
        with _swapped(body, replaced):
            p = torch.log_softmax(model(x).logits, -1)
        q = torch.log_softmax(model(x).logits, -1)
    return float((p.exp() * (p - q)).sum(-1).mean())


def test_healing_through_q4_lowers_the_kl_on_unseen_text(tiny_llama, tmp_path):
    path, text = _text(tmp_path)
    model, tok, adapter, originals = _compressed(tiny_llama, str(path))
    config = HealConfig(steps=30, windows_per_step=2, window=64, lr=2e-2)
    factors = [
        m.weight
        for layer in adapter.decoder_body().modules()
        if isinstance(layer, FactoredLinear)
        for m in (layer.proj, layer.out)
    ]
    unhealed = [w.detach().clone() for w in factors]
    with torch.no_grad():  # what the q4 file runs without healing
        for w in factors:
            w.copy_(on_q4_grid(w, 1))
    before = _held_out_kl(model, adapter, originals, tok, text[30_000:])
    with torch.no_grad():
        for w, w0 in zip(factors, unhealed):
            w.copy_(w0)
    report = heal_linears(
        adapter, tok, originals, 30, str(path), "test", True, tmp_path / "c.pt", False, None, config
    )
    assert report["kept"] and report["through_q4"]
    assert report["held_out_kl_after"] < report["held_out_kl_before"]
    after = _held_out_kl(model, adapter, originals, tok, text[30_000:])
    assert after < 0.98 * before, (before, after)
    # the fitted factors are left on q4's grid: q4 stores exactly what was fitted
    proj = factors[0].detach().numpy()  # (out, in): q4's blocks run along `in`
    blocks = proj.T.reshape(proj.shape[1] // 32, 32, -1)
    assert fit_q4_grid(blocks)[3].all()


def test_interrupted_saten_healing_resumes_from_its_checkpoint(tiny_llama, tmp_path):
    """Saten through q4: its cores are fitted on their q4 grid, and a fit stopped at step 3
    resumes to the same parameters as one that ran through."""
    path, _ = _text(tmp_path)

    def run(checkpoint, on_step=None):
        model, tok, adapter, originals = _compressed(tiny_llama, str(path), "saten", 0.6)
        args = (adapter, tok, originals, SMALL.steps, str(path), "test", True, checkpoint)
        report = heal_linears(*args, False, on_step, SMALL)
        return report, {n: p.detach().clone() for n, p in model.named_parameters()}

    whole, params = run(tmp_path / "a.pt")
    assert whole["through_q4"] and whole["resumed_from_step"] == 0
    cores = [p for n, p in params.items() if n.endswith(("core1", "core2"))]
    assert cores and all(fit_q4_grid(c.numpy().reshape(-1, 32, c.shape[1]))[3].all() for c in cores)

    def stop_at_3(step: int) -> None:
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt, match="rerun the same command to resume"):
        run(tmp_path / "b.pt", stop_at_3)
    resumed, resumed_params = run(tmp_path / "b.pt")
    assert resumed["resumed_from_step"] == 3 and resumed["kept"] == whole["kept"]
    for name, p in params.items():
        assert np.array_equal(resumed_params[name].numpy(), p.numpy()), name
