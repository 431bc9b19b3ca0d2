"""Calibration without user text: the model's own samples (export/generated_calibration.py)."""

from __future__ import annotations

import numpy as np
import pytest

from tensorgpt.export import generated_calibration as gc


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_llama):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama)).eval()
    return model, AutoTokenizer.from_pretrained(str(tiny_llama))


def test_samples_are_seeded_and_leave_the_global_rng_alone(model_and_tokenizer):
    import torch

    model, tok = model_and_tokenizer
    cfg = gc.GenerationConfig(sequences=3, length=12, seed=0)
    torch.manual_seed(123)
    a = gc.generate_windows(model, tok, cfg)
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


def test_generated_ids_are_cached_by_model(model_and_tokenizer, tmp_path, monkeypatch):
    import torch

    model, tok = model_and_tokenizer
    cfg = gc.GenerationConfig(sequences=2, length=8)
    fp = gc.model_fingerprint(model, tok)
    first = gc.generated_ids(model, tok, cfg, tmp_path, fp)
    assert len(list(tmp_path.glob("generated-*.npz"))) == 1

    def fail(*a, **k):
        raise AssertionError("generated again instead of reading the cache")

    monkeypatch.setattr(gc, "generate_windows", fail)
    assert np.array_equal(gc.generated_ids(model, tok, cfg, tmp_path, fp), first)
    w = model.get_input_embeddings().weight
    with torch.no_grad():
        w[0, 0] += 1.0
    try:
        assert gc.model_fingerprint(model, tok) != fp  # another model: another cache entry
    finally:
        with torch.no_grad():
            w[0, 0] -= 1.0


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="generated calibration"):
        gc.GenerationConfig(sequences=0).validate()
