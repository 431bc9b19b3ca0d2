"""A GGUF source (Gemma 3, the case a new user brought) exports with --quantize q4, keeping the
file's Q4_0/Q4_1 blocks bit for bit and naming each tensor it had to re-round (Q5_0 here).

The tiny GGUF is written locally from the tiny Gemma 3 checkpoint (tests/gguf_builder.py):
token embedding Q8_0, o_proj Q5_0, down_proj Q4_0, every other matrix Q4_1, norms F32.
"""

from __future__ import annotations

import pytest

from tensorgpt.export.exporter import export_model
from tests.conftest import family_checkpoint
from tests.gguf_builder import write_gguf

pytest.importorskip("gguf")
KINDS = {"embed_tokens": "Q8_0", "o_proj": "Q5_0", "down_proj": "Q4_0"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    checkpoint = family_checkpoint(tmp_path_factory, "gemma3")
    gguf_file = write_gguf(checkpoint, "gemma3", checkpoint / "tiny-gemma3.gguf", KINDS)
    lines = []
    manifest = export_model(
        str(gguf_file), tmp_path_factory.mktemp("gguf") / "out", quantize="q4", log=lines.append
    )
    return manifest, lines


def test_gguf_source_verifies(exported):
    manifest, _ = exported
    assert manifest["architecture"] == "Gemma3ForCausalLM"
    assert manifest["verification"]["passed"], manifest["verification"]
    assert any(q.startswith("embedding scale") for q in manifest["quirks"])


def test_four_bit_blocks_kept_and_the_rest_named(exported):
    manifest, lines = exported
    report = manifest["weight_quantization"]
    assert report["source_types"] == {"F32": 13, "Q4_0": 2, "Q4_1": 10, "Q5_0": 2, "Q8_0": 1}
    tensors = report["tensors"]
    assert len(tensors) == 14  # 2 layers x (q, k, v, o, gate, up, down)
    for name, t in tensors.items():
        if "o_proj" in name:  # Q5_0 source: 32 levels do not fit 16
            assert t["exact_blocks"] == 0 and 0 < t["rel_rms_error"] < 0.2, (name, t)
            assert any(name in line and "re-rounded" in line for line in lines), name
        else:  # Q4_0 and Q4_1 sources: the grid is recovered bit for bit
            assert t["exact_blocks"] == 1 and t["rel_rms_error"] == 0, (name, t)
    assert report["exact_weights"] == 12
