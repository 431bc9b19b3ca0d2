"""`export --stream`: the same file as the in-memory export, written tensor by tensor."""

from __future__ import annotations

import json
import shutil

import onnx
import pytest

from tensorgpt.cli import main as cli_main
from tensorgpt.common.contract import MODEL_FILE
from tensorgpt.export import exporter
from tensorgpt.export.exporter import export_model


def _graph_bytes(folder) -> bytes:
    """model.onnx without its metadata_props (they carry the manifest, whose verification
    and timing parts differ between the two paths by design)."""
    model = onnx.load(str(folder / MODEL_FILE), load_external_data=False)
    del model.metadata_props[:]
    return model.SerializeToString()


SLOW = pytest.mark.slow


@pytest.mark.parametrize(
    ("family", "quantize"),
    [
        ("llama", "q4"),
        ("gpt2", "none"),
        pytest.param("mistral", "q4", marks=SLOW),  # untied head, sliding window
        pytest.param("gemma2", "none", marks=SLOW),  # embedding scale, logit soft cap
    ],
)
def test_stream_writes_the_in_memory_export_byte_for_byte(
    family, quantize, tiny_llama, tiny_gpt2, tmp_path_factory, tmp_path, monkeypatch
):
    """Llama: transposed nn.Linear weights, q4 codes; GPT-2: Conv1D weights as stored, a
    tied head. The in-memory export is forced to external data (it uses it past 1.8 GB),
    the layout --stream always writes."""
    from tests.conftest import family_checkpoint

    known = {"llama": tiny_llama, "gpt2": tiny_gpt2}
    ckpt = known.get(family) or family_checkpoint(tmp_path_factory, family)
    monkeypatch.setattr(exporter, "EXTERNAL_DATA_THRESHOLD", 0)
    memory, stream = tmp_path / "memory", tmp_path / "stream"
    export_model(str(ckpt), memory, quantize=quantize, log=lambda _: None)
    manifest = export_model(str(ckpt), stream, quantize=quantize, log=lambda _: None, stream=True)
    data = MODEL_FILE + ".data"
    assert (stream / data).read_bytes() == (memory / data).read_bytes()
    assert _graph_bytes(stream) == _graph_bytes(memory)
    check = manifest["verification"]
    assert check["passed"] and check["checked"] == "the whole model (2 layers)"
    if quantize == "q4":
        report = manifest["weight_quantization"]
        expected = json.loads((memory / "manifest.json").read_text())["weight_quantization"]
        assert report["weights"] == expected["weights"] > 0
        assert report["tensors"] == expected["tensors"]


def test_stream_checks_first_and_last_layers_of_a_deeper_model(tmp_path):
    """4 layers: the parity check runs on a 2-layer model of layers 0 and 3 and says so."""
    from tests.conftest import build_checkpoint

    ckpt = build_checkpoint(tmp_path / "deep", "llama", num_hidden_layers=4)
    out = tmp_path / "out"
    manifest = export_model(str(ckpt), out, quantize="q4", log=lambda _: None, stream=True)
    check = manifest["verification"]
    assert check["checked"] == "layers 0 and 3 of 4, with the embedding and head"
    assert check["passed"] and check["max_abs_logit_diff"] <= check["tolerance"]
    assert manifest["weight_quantization"]["weights"] == 4 * 7


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--method", "tt"], "--stream works with --method none"),
        (["--quantize", "int8"], "--stream works with --quantize none or q4"),
        (["--quantize", "q4", "--runtime", "packed"], "--stream works with --runtime portable"),
    ],
)
def test_stream_refuses_what_it_cannot_do_in_one_line(tiny_gpt2, tmp_path, capsys, args, words):
    code = cli_main(["export", str(tiny_gpt2), str(tmp_path / "out"), "--stream", *args])
    err = capsys.readouterr().err
    assert code == 2 and words in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_stream_refuses_a_checkpoint_without_safetensors(tiny_gpt2, tmp_path, capsys):
    ckpt = tmp_path / "bin"
    shutil.copytree(tiny_gpt2, ckpt)
    (ckpt / "model.safetensors").rename(ckpt / "pytorch_model.bin")
    code = cli_main(["export", str(ckpt), str(tmp_path / "out"), "--stream"])
    err = capsys.readouterr().err
    assert code == 2 and "reads a local safetensors checkpoint folder" in err


def test_an_interrupted_write_leaves_nothing_behind(tiny_llama, tmp_path, monkeypatch):
    """Ctrl-C half-way through the tensors leaves OUT_DIR as it was (absent here), no
    half-written model.onnx.data and no staging folder."""
    from tensorgpt.export import stream_write

    real_track, written = stream_write.track, []

    def interrupted(items, *args, **kwargs):
        for item in real_track(items, *args, **kwargs):
            if len(written) == 5:
                raise KeyboardInterrupt
            written.append(item.name)
            yield item

    monkeypatch.setattr(stream_write, "track", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_model(str(tiny_llama), tmp_path / "out", log=lambda _: None, stream=True)
    assert len(written) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == []
