"""Calibration without user text: the model's own samples (export/generated_calibration.py)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from tensorgpt.export import generated_calibration as gc


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_llama):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama)).eval()
    return model, AutoTokenizer.from_pretrained(str(tiny_llama))


def test_samples_are_seeded_and_leave_the_global_rng_alone(model_and_tokenizer, capsys):
    import torch

    model, tok = model_and_tokenizer
    cfg = gc.GenerationConfig(sequences=3, length=12, seed=0)
    torch.manual_seed(123)
    a = gc.generate_windows(model, tok, cfg)
    log = capsys.readouterr().err.splitlines()  # one batched call: one start and one end line
    assert log[0] == "[export] sampling 3 x 12 calibration tokens: 12 tokens ..."
    assert log[-1].startswith("[export] sampling 3 x 12 calibration tokens: 12 tokens done in")
    after = torch.rand(1)
    torch.manual_seed(123)
    assert torch.equal(torch.rand(1), after)  # the caller's random stream is unchanged
    assert a.shape == (3, 12) and a.dtype == np.int64
    assert a.min() >= 0 and a.max() < model.config.vocab_size
    assert np.array_equal(a, gc.generate_windows(model, tok, cfg))
    other = gc.generate_windows(model, tok, gc.GenerationConfig(3, 12, seed=1))
    assert not np.array_equal(a, other)
    assert len(np.unique(a)) > 5  # sampled at temperature 1, not one repeated token


def test_starts_cover_eos_bos_and_the_chat_turn(model_and_tokenizer):
    _, tok = model_and_tokenizer
    assert gc.generation_starts(tok) == [[tok.eos_token_id]]  # tiny tokenizer: eos == bos
    tok.chat_template = "{% for m in messages %}<|endoftext|>{{ m['content'] }}{% endfor %}"
    try:
        starts = gc.generation_starts(tok)
    finally:
        tok.chat_template = None
    assert starts == [[tok.eos_token_id]]  # the chat prefix is that same token: not repeated


def test_starts_of_different_lengths_share_one_left_padded_batch(model_and_tokenizer, monkeypatch):
    """Starts of different lengths go into one call (left-padded, masked); every window is
    the `length` tokens sampled after its own start, none of the padding or start."""
    model, tok = model_and_tokenizer
    calls = []
    generate = model.generate
    monkeypatch.setattr(model, "generate", lambda x, **k: calls.append(x) or generate(x, **k))
    starts = [[tok.eos_token_id], [tok.eos_token_id, 5, 6, 7]]
    monkeypatch.setattr(gc, "generation_starts", lambda _: starts)
    ids = gc.generate_windows(model, tok, gc.GenerationConfig(sequences=4, length=6))
    assert len(calls) == 1 and calls[0].shape == (4, 4)
    assert ids.shape == (4, 6)


def test_tc_export_without_a_text_calibrates_on_the_model_and_caches(
    tiny_llama, tmp_path, monkeypatch
):
    """tc with no --calib-text: the model's own samples, cached by the model's weights; a
    second export reads the cache (same bytes), a user text is mixed by the unseen mass."""
    from tensorgpt.export.compress import CompressionSpec
    from tensorgpt.export.exporter import export_model
    from tensorgpt.export.methods.tc import DEFAULT_BITS, DEFAULT_BITS_ANY_DOMAIN

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    spec = CompressionSpec(method="tc")
    first = export_model(str(tiny_llama), tmp_path / "a", spec, log=lambda _: None)
    info = first["embedding_info"]
    assert first["verification"]["passed"]
    # no text, domain unknown: the any-domain budget, not the in-domain one
    assert DEFAULT_BITS < info["bits_per_weight"] <= DEFAULT_BITS_ANY_DOMAIN
    assert info["calibration"] == "generated" and info["generated_tokens"] == 8 * 128
    assert info["calibration_shares"] == {"tokenizer": 0.5, "model": 0.5}
    assert info["logit_scale"] is True and info["logit_bias"] is False
    # the tied head scales each row's coded part of its logit by the code's gain, far enough
    # from 1 that the parity check (1e-3) would fail without the graph's Mul, Gather and Add
    inits = {t.name: t for t in onnx.load(str(tmp_path / "a/model.onnx")).graph.initializer}
    assert "embedding.logit_bias" not in inits
    scale = onnx.numpy_helper.to_array(inits["embedding.logit_scale"]).astype(np.float32)
    assert scale.shape == (first["config"]["vocab_size"],) and np.abs(scale - 1).max() > 0.01
    cached = sorted(p.name for p in (tmp_path / "cache/tensorgpt/calibration").iterdir())
    assert [name.split("-")[:2] for name in cached] == [
        ["generated", "head"],
        ["generated", "ids"],
        ["generated", "stats"],
    ]

    def fail(*a, **k):
        raise AssertionError("generated again instead of reading the cache")

    monkeypatch.setattr(gc, "generate_windows", fail)
    export_model(str(tiny_llama), tmp_path / "b", spec, log=lambda _: None)
    assert (tmp_path / "a/model.onnx").read_bytes() == (tmp_path / "b/model.onnx").read_bytes()
    # the packed runtime applies the same gain after its 8-bit head (parity against PyTorch)
    packed = export_model(
        str(tiny_llama), tmp_path / "p", spec, quantize="q4", runtime="packed", log=lambda _: None
    )
    assert packed["verification"]["passed"] and packed["verification"]["exact_grid"]["passed"]


def test_a_user_text_takes_all_but_the_unseen_mass(model_and_tokenizer, tmp_path):
    from tensorgpt.export.methods.tc import calibrate
    from tensorgpt.models import adapter_for

    model, tok = model_and_tokenizer
    text = "The quick brown fox jumps over the lazy dog. A fox, a dog. " * 60
    V = model.config.vocab_size
    weights, metric, mean_h, info = calibrate(adapter_for(model), tok, V, text, "fp", tmp_path)
    shares = info["calibration_shares"]
    assert info["calibration"] == "generated + text" and 0.5 < shares["user"] < 1
    assert shares["model"] == pytest.approx((1 - shares["user"]) / 2, abs=1e-6)
    assert weights.shape == (V,) and (weights > 0).all()  # every row keeps some weight
    ids = tok(text, add_special_tokens=False)["input_ids"]
    unseen = np.setdiff1d(np.arange(V), ids)
    assert weights[ids].min() > weights[unseen].max()  # the user's tokens come first
    assert metric.shape == (64, 64) and np.allclose(metric, metric.T)
    assert mean_h.shape == (64,) and np.isfinite(mean_h).all() and np.abs(mean_h).max() > 0


def test_fingerprint_follows_the_weights(model_and_tokenizer):
    import torch

    from tensorgpt.export.calibration import model_fingerprint
    from tensorgpt.models import adapter_for

    model, tok = model_and_tokenizer
    adapter = adapter_for(model)
    fp = model_fingerprint(adapter, tok)
    assert model_fingerprint(adapter, tok) == fp
    w = model.get_input_embeddings().weight
    with torch.no_grad():
        w[0, 0] += 1.0
    try:
        assert model_fingerprint(adapter, tok) != fp  # another model: another cache entry
    finally:
        with torch.no_grad():
            w[0, 0] -= 1.0


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="generated calibration"):
        gc.GenerationConfig(sequences=0).validate()
