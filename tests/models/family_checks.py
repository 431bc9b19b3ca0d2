"""The checks every family passes: each tests/models/test_<family>.py subclasses FamilyChecks
(or WindowFamilyChecks) and sets only what differs (FAMILY, METHODS); the fixtures of
tests/models/conftest.py read those class attributes.

parity       the exporter's own check (PyTorch vs onnxruntime, 16-token prompt + 8 greedy
             steps through the cache) passed, for every method
kv_cache     in onnxruntime, a prompt fed in one call equals the same prompt fed as a
             short prefill then one token at a time through the cache, over 3 sliding
             windows; every layer's present is past + seq long
runtime      the runtime's generate() (split load when written) reproduces the greedy
             tokens PyTorch picked in the parity check
window       (sliding-window families) the window changes the model's output in PyTorch,
             so the parity check could fail if the graph ignored it
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from transformers import AutoTokenizer

from tensorgpt.export.verify import prompt_ids
from tensorgpt.runtime_demo.generate import generate
from tensorgpt.runtime_demo.session import ExportedModel
from tests.conftest import SLIDING_WINDOW

KV_TOKENS = 3 * SLIDING_WINDOW
KV_TOLERANCE = 1e-4
# Every method on the families with the most hooks; elsewhere the most transformed export
# (calibrated table coding + 4-bit weights + split load), whose parity check covers the body,
# both hooks and the cache. benchmarks/family_matrix.py runs every method on every family.
QUIRKY = ("none", "tt", "int8-rows", "tc+q4")
COMMON = ("tc+q4",)


def kv_cache_diff(folder: Path) -> float:
    """Max |logit| difference between a full recompute and a prefill + one-token-at-a-time
    decode over KV_TOKENS tokens (asserting every present is past + seq long)."""
    model = ExportedModel(folder, split=False)
    ids = np.random.default_rng(0).integers(1, model.vocab_size, (1, KV_TOKENS))
    full, _ = model.forward(ids, np.ones_like(ids), np.arange(KV_TOKENS)[None], model.empty_past(1))
    prefill = 3
    logits, past = model.forward(
        ids[:, :prefill],
        np.ones((1, prefill), np.int64),
        np.arange(prefill)[None],
        model.empty_past(1),
    )
    steps = [logits[0]]
    for t in range(prefill, KV_TOKENS):
        logits, past = model.forward(
            ids[:, t : t + 1], np.ones((1, t + 1), np.int64), np.array([[t]]), past
        )
        steps.append(logits[0])
        assert all(k.shape[2] == v.shape[2] == t + 1 for k, v in past), (folder, t)
    return float(np.abs(np.concatenate(steps) - full[0]).max())


class FamilyChecks:
    """Not collected itself (no Test prefix); a family file's `class Test<Family>` is."""

    FAMILY: str
    METHODS: tuple[str, ...] = COMMON

    def test_parity(self, exports):
        for method, (_, manifest) in exports.items():
            v = manifest["verification"]
            assert v["passed"] and v["greedy_match"], (method, v)
            assert v["max_abs_logit_diff"] <= 1e-3, (method, v)

    def test_kv_cache_equals_recompute(self, exports):
        for method, (folder, _) in exports.items():
            diff = kv_cache_diff(folder)
            assert diff <= KV_TOLERANCE, (method, diff)

    def test_runtime_generates(self, exports):
        for method, (folder, manifest) in exports.items():
            model = ExportedModel(folder)
            tokenizer = AutoTokenizer.from_pretrained(str(folder))
            ids = prompt_ids(tokenizer, model.vocab_size)[0].tolist()
            expected = manifest["verification"]["greedy_tokens"]
            got = list(generate(model, ids, max_new_tokens=len(expected), eos_token_ids=[]))
            assert got == expected, method


class WindowFamilyChecks(FamilyChecks):
    """Families with sliding-window layers: also check that the window matters."""

    def test_window_matters(self, checkpoint):
        """Past the window, the sliding-window model's logits differ from full attention."""
        import torch
        from transformers import AutoModelForCausalLM

        ids = torch.randint(1, 200, (1, KV_TOKENS), generator=torch.Generator().manual_seed(0))
        model = AutoModelForCausalLM.from_pretrained(str(checkpoint), dtype=torch.float32).eval()
        with torch.no_grad():
            windowed = model(input_ids=ids).logits
            model.config.sliding_window = 4 * KV_TOKENS
            if hasattr(model.config, "text_config"):
                model.config.text_config.sliding_window = 4 * KV_TOKENS
            full = model(input_ids=ids).logits
        w = SLIDING_WINDOW
        inside = float((windowed[0, :w] - full[0, :w]).abs().max())
        past = float((windowed[0, w + 1 :] - full[0, w + 1 :]).abs().max())
        assert inside < 1e-5 and past > 1e-2, (inside, past)
