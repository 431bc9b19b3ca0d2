"""A TT-compressed export (tied head rebuilt from the cores at session load) runs like PyTorch
on the same, reconstructed, weights."""

from __future__ import annotations

import pytest
from test_end_to_end import PROMPTS, _hf_greedy, _text, _torch_strided_ppl

from tensorgpt.runtime_demo.generate import generate
from tensorgpt.runtime_demo.perplexity import perplexity
from tensorgpt.runtime_demo.session import ExportedModel
from tensorgpt.runtime_demo.tokenizer import encode, load_tokenizer

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tt_torch_model(exported_tt):
    """The checkpoint with its embedding replaced by the TT reconstruction (tied: head too)."""
    from transformers import AutoModelForCausalLM

    from tensorgpt.export.compress import CompressionSpec, compress_embedding

    model = AutoModelForCausalLM.from_pretrained(str(exported_tt.checkpoint), dtype=torch.float32)
    table = model.get_input_embeddings().weight.detach().numpy()
    graph, _ = compress_embedding(table, CompressionSpec(method="tt", rank=4))
    model.get_input_embeddings().weight.data = torch.from_numpy(graph.decoded().copy())
    return model.eval()


def test_tt_greedy_and_perplexity_match_pytorch(exported_tt, tt_torch_model) -> None:
    model = ExportedModel(exported_tt.folder, threads=1)
    assert model.manifest.method == "tt"
    tokenizer = load_tokenizer(model.folder)
    eos = model.config.eos_token_ids[0]
    for prompt in PROMPTS[:2]:
        ids = encode(tokenizer, prompt)
        assert list(generate(model, ids, 16)) == _hf_greedy(tt_torch_model, ids, 16, eos)
    ids = encode(tokenizer, _text(), add_special_tokens=False)[:300]
    expected = _torch_strided_ppl(tt_torch_model, ids, 64, 32)
    assert perplexity(model, ids, 64, 32)["perplexity"] == pytest.approx(expected, rel=1e-3)
