"""Each family transformers reads from GGUF loads back, through tensorgpt's loader, to its
checkpoint's own model: same logits over 3 sliding windows from an F32 GGUF written as llama.cpp
lays it out (tests/gguf_builder.py). This covers the config keys transformers' GGUF reader
drops and export/gguf_config.py reads back (Qwen3 head_dim, GPT-2 context, Gemma 2 soft caps,
Phi-3 partial rotary and window, Nemotron partial rotary). Block-type GGUFs and --quantize q4
are tested on Gemma 3 in test_gguf_input.py and for every family in benchmarks/family_matrix.py --gguf.
"""

from __future__ import annotations

import pytest
import torch

from tensorgpt.export.load import load
from tests.conftest import SLIDING_WINDOW, build_checkpoint
from tests.gguf_builder import GGUF_ARCH, write_gguf

pytest.importorskip("gguf")
# What a GGUF file cannot say, so the checkpoint is built the way released models are:
# llama.cpp writes Mistral as llama (no window key; Mistral v0.2+ have none), Qwen2.5 GGUFs
# carry no sliding-window switch (the released models keep it off), and Gemma 3's 5:1
# sliding pattern is the config's default rather than a key.
AS_RELEASED = {
    "mistral": dict(sliding_window=None),
    "qwen2": dict(use_sliding_window=False, sliding_window=None),
    "gemma3": dict(layer_types=None),
    "phi3": dict(sliding_window=SLIDING_WINDOW),
    # not the config's default 0.5: the loaded model matches only if the key is read back
    "nemotron": dict(partial_rotary_factor=0.25),
}
# the families whose config needed export/gguf_config.py run by default; the rest opt in
FAST = ("mistral", "qwen3", "gpt2", "gemma2", "phi3", "nemotron")


@pytest.mark.parametrize(
    "family",
    [f if f in FAST else pytest.param(f, marks=pytest.mark.slow) for f in GGUF_ARCH],
)
def test_gguf_loads_back_to_the_checkpoint(family, tmp_path):
    from transformers import AutoModelForCausalLM

    checkpoint = build_checkpoint(tmp_path / "hf", family, **AS_RELEASED.get(family, {}))
    gguf_file = write_gguf(checkpoint, family, tmp_path / "tiny.gguf", {"": "F32"})
    source = AutoModelForCausalLM.from_pretrained(str(checkpoint), dtype=torch.float32).eval()
    loaded = load(str(gguf_file)).model
    ids = torch.randint(1, 200, (1, 3 * SLIDING_WINDOW), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (source(input_ids=ids).logits - loaded(input_ids=ids).logits).abs().max().item()
    assert diff <= 1e-5, (family, type(loaded).__name__, diff)
