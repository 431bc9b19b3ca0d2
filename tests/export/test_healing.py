"""Healing a transform-coded table (export/healing.py) on tiny local checkpoints."""

from __future__ import annotations

import numpy as np
import pytest

from tensorgpt.export.compress import CompressionSpec
from tensorgpt.export.healing import HealableTable, HealConfig, heal
from tensorgpt.models import adapter_for
from tensorgpt.tt_ops.transform_fit import fit_transform_code

SMALL = HealConfig(steps=6, windows_per_step=2, window=64, lr=0.02, checkpoint_every=2)


def _text() -> str:
    from tests.conftest import SHARED_DATA

    valid = SHARED_DATA / "valid.txt"
    if valid.is_file():
        return valid.read_text(encoding="utf-8")[:60_000]
    return "The quick brown fox jumps over the lazy dog. " * 1500


def _load(folder):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    return model, AutoTokenizer.from_pretrained(str(folder))


def _coded(model, tokenizer, bits: float = 3.0):
    table = model.get_input_embeddings().weight.detach().numpy().copy()
    ids = np.asarray(tokenizer(_text()[:30_000])["input_ids"])
    counts = np.bincount(ids, minlength=table.shape[0]).astype(float)
    return fit_transform_code(table, bits_per_weight=bits, token_counts=counts)


def _kl(model, tokenizer, table: np.ndarray, text: str) -> float:
    """Mean KL(original || model with `table` as tied embedding and head) on `text`."""
    import torch

    x = torch.tensor(tokenizer(text)["input_ids"][:256]).view(4, 64)
    w = model.get_input_embeddings().weight
    with torch.no_grad():
        p = torch.log_softmax(model(x).logits, -1)
        original = w.data.clone()
        w.data.copy_(torch.from_numpy(table))
        try:
            q = torch.log_softmax(model(x).logits, -1)
        finally:
            w.data.copy_(original)
    return float((p.exp() * (p - q)).sum(-1).mean())


def test_healable_table_starts_as_the_code():
    rng = np.random.default_rng(0)
    table = rng.standard_normal((600, 24)).astype(np.float32)
    counts = np.maximum(0, rng.zipf(1.4, 600) - 2).astype(float)
    code = fit_transform_code(table, bits_per_weight=2.0, token_counts=counts)
    healable = HealableTable(code)
    decoded = healable.decode().detach().numpy()
    assert np.abs(decoded - code.decode()).max() < 1e-5
    back = healable.to_code()
    assert back.nbytes() == code.nbytes()
    for name, arr in code.arrays().items():
        assert np.array_equal(back.arrays()[name], arr), name


def test_healing_lowers_kl_on_unseen_text_at_the_same_bytes(tiny_llama, tmp_path):
    model, tok = _load(tiny_llama)
    code = _coded(model, tok)
    config = HealConfig(steps=30, window=64, lr=0.02)
    healed, report = heal(
        adapter_for(model),
        tok,
        code,
        _text()[:30_000],
        config,
        checkpoint=tmp_path / "c.pt",
        progress=False,
    )
    assert healed.nbytes() == code.nbytes()
    assert report["steps"] == 30 and report["head_tied"] and report["kept"]
    held_out = _text()[40_000:]  # not used for counts or healing
    before = _kl(model, tok, code.decode(), held_out)
    after = _kl(model, tok, healed.decode(), held_out)
    assert after < 0.9 * before, (before, after)


def test_interrupted_healing_resumes_to_the_same_result(tiny_gpt2, tmp_path):
    model, tok = _load(tiny_gpt2)
    code = _coded(model, tok)
    text = _text()[:30_000]
    whole, _ = heal(
        adapter_for(model), tok, code, text, SMALL, checkpoint=tmp_path / "a.pt", progress=False
    )

    def stop_at_3(step: int) -> None:
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt, match="rerun the same command to resume"):
        heal(
            adapter_for(model),
            tok,
            code,
            text,
            SMALL,
            tmp_path / "b.pt",
            progress=False,
            on_step=stop_at_3,
        )
    resumed, report = heal(
        adapter_for(model), tok, code, text, SMALL, tmp_path / "b.pt", progress=False
    )
    assert report["resumed_from_step"] == 3
    for name, arr in whole.arrays().items():
        assert np.array_equal(resumed.arrays()[name], arr), name
    # a finished checkpoint makes a rerun instant: nothing left to fit
    again, report = heal(
        adapter_for(model), tok, code, text, SMALL, tmp_path / "b.pt", progress=False
    )
    assert report["resumed_from_step"] == 6


def test_export_with_healing_verifies(tiny_llama, tmp_path, monkeypatch):
    from tensorgpt.export.exporter import export_model

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    calib = tmp_path / "calib.txt"
    calib.write_text(_text()[:30_000])
    spec = CompressionSpec(method="tc", bits_per_weight=3.0, calib_text=str(calib), heal_steps=2)
    manifest = export_model(str(tiny_llama), tmp_path / "out", spec, log=lambda _: None)
    assert manifest["verification"]["passed"]
    healing = manifest["embedding_info"]["healing"]
    assert healing["steps"] == 2 and healing["kl_last_steps"] is not None
    assert list((tmp_path / "cache" / "tensorgpt" / "heal").glob("*.pt"))


@pytest.mark.parametrize(
    "spec, message",
    [
        (CompressionSpec(method="tt", heal_steps=4), "--heal-steps needs --method tc"),
        (
            CompressionSpec(method="tc", calib_text="x.txt", heal_steps=-1),
            "--heal-steps must be >= 0",
        ),
    ],
)
def test_bad_heal_options(spec, message):
    with pytest.raises(ValueError, match=message):
        spec.validate()


def test_a_fit_that_does_not_generalise_is_not_kept(tiny_gpt2, tmp_path):
    """A diverging fit (absurd learning rate) raises the held-out KL: the code comes back as is."""
    model, tok = _load(tiny_gpt2)
    code = _coded(model, tok)
    config = HealConfig(steps=3, window=64, lr=5.0)
    out, report = heal(
        adapter_for(model), tok, code, _text()[:30_000], config, tmp_path / "c.pt", progress=False
    )
    assert report["held_out_kl_after"] > report["held_out_kl_before"]
    assert not report["kept"] and out is code
