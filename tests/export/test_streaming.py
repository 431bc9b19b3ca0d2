"""`export --stream`: the same file as the in-memory export, written tensor by tensor."""

from __future__ import annotations

import json
import shutil

import onnx
import pytest

from tensorgpt.cli import main as cli_main
from tensorgpt.common.contract import MODEL_FILE
from tensorgpt.export import exporter
from tensorgpt.export.compress import CompressionSpec
from tensorgpt.export.exporter import export_model


def _graph_bytes(folder) -> bytes:
    """model.onnx without its metadata_props (they carry the manifest, whose verification
    and timing parts differ between the two paths by design)."""
    model = onnx.load(str(folder / MODEL_FILE), load_external_data=False)
    del model.metadata_props[:]
    return model.SerializeToString()


SLOW = pytest.mark.slow


@pytest.mark.parametrize(
    ("family", "quantize", "method"),
    [
        ("llama", "q4", "none"),
        ("gpt2", "none", "none"),
        ("llama", "q4", "int8-rows"),  # a coded table, tied head
        pytest.param("gpt2", "none", "tt", marks=SLOW),
        pytest.param("mistral", "q4", "int4-rows", marks=SLOW),  # untied head, sliding window
        pytest.param("gemma2", "none", "none", marks=SLOW),  # embedding scale, logit soft cap
    ],
)
def test_stream_writes_the_in_memory_export_byte_for_byte(
    family, quantize, method, tiny_llama, tiny_gpt2, tmp_path_factory, tmp_path, monkeypatch
):
    """Llama: transposed nn.Linear weights, q4 codes; GPT-2: Conv1D weights as stored, a
    tied head; a table method codes the same table with the same code. The in-memory export
    is forced to external data (it uses it past 1.8 GB), the layout --stream always writes."""
    from tests.conftest import family_checkpoint

    known = {"llama": tiny_llama, "gpt2": tiny_gpt2}
    ckpt = known.get(family) or family_checkpoint(tmp_path_factory, family)
    monkeypatch.setattr(exporter, "EXTERNAL_DATA_THRESHOLD", 0)
    memory, stream = tmp_path / "memory", tmp_path / "stream"
    spec = CompressionSpec(method=method)
    export_model(str(ckpt), memory, spec, quantize=quantize, log=lambda _: None)
    manifest = export_model(
        str(ckpt), stream, spec, quantize=quantize, log=lambda _: None, stream=True
    )
    data = MODEL_FILE + ".data"
    assert (stream / data).read_bytes() == (memory / data).read_bytes()
    assert _graph_bytes(stream) == _graph_bytes(memory)
    check = manifest["verification"]
    assert check["passed"] and check["checked"] == "the whole model (2 layers)"
    in_memory = json.loads((memory / "manifest.json").read_text())
    assert manifest["embedding_info"] == in_memory["embedding_info"]
    assert manifest["reconstruction"] == in_memory["reconstruction"]
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
        (["--method", "tc", "--calib-text", "t.txt", "--heal-steps", "1"], "--heal-steps needs"),
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


def test_model_free_calibration_keeps_the_counts_rule(tiny_llama):
    """With a text (no --calib-mix): its raw counts, as the in-memory `calibrate`; with
    --calib-mix yes or no text: the Good-Turing mixture with the tokenizer's prior."""
    import numpy as np
    from transformers import AutoTokenizer

    from tensorgpt.export.calibration import text_ids, token_counts
    from tensorgpt.export.methods.tc import calibrate_without_model
    from tensorgpt.tt_ops.row_prior import row_importance, tokenizer_prior

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llama))
    text, vocab = "the cat sat on the mat, the end", 256
    counts = token_counts(text_ids(tokenizer, text), vocab)
    weights, metric, info = calibrate_without_model(tokenizer, vocab, text, mix=False)
    assert metric is None and np.array_equal(weights, counts) and counts.sum() > 0
    mixed, _, info = calibrate_without_model(tokenizer, vocab, text, mix=True)
    expected, shares = row_importance(vocab, user_counts=counts)
    assert np.array_equal(mixed, expected) and info["calibration_shares"] == shares
    prior, _, _ = calibrate_without_model(tokenizer, vocab, None, mix=False)
    assert np.allclose(prior, tokenizer_prior(vocab))


def test_checkpoint_reader_widens_bf16_and_fp16_exactly(tmp_path, monkeypatch):
    """As from_pretrained(dtype=float32) does; bf16 is read in chunks (10 values here) into
    the float32 array and widened in place (no second copy)."""
    import numpy as np
    import torch
    from safetensors.torch import save_file

    from tensorgpt.export import checkpoint_tensors
    from tensorgpt.export.checkpoint_tensors import CheckpointTensors

    monkeypatch.setattr(checkpoint_tensors, "BF16_CHUNK", 10)

    values = torch.randn(33, 7, generator=torch.Generator().manual_seed(0))
    stored = {"b": values.to(torch.bfloat16), "h": values.to(torch.float16)}
    save_file(stored, str(tmp_path / "model.safetensors"))
    tensors = CheckpointTensors(tmp_path)
    for key, tensor in stored.items():
        read = tensors.read(key)
        assert read.dtype == np.float32 and np.array_equal(read, tensor.float().numpy())
        assert np.array_equal(tensors.read(key, 5, 12), read[5:12])  # rows alone
    with pytest.raises(ValueError, match="rows 30..34"):
        tensors.read("b", 30, 34)


def test_stream_tc_calibrates_without_the_model_and_checks_the_coded_table(tmp_path):
    """tc under --stream: the table is coded once, from the text's token counts with the
    identity metric (no model run), and the first-and-last-layer check runs PyTorch on the
    decoded rows of the same code (a wrong or refitted table would fail it). The head is
    untied: the check's PyTorch side makes only its tokens' rows and reads the head in
    chunks, its onnxruntime file decodes only the looked-up rows from the codes
    (export/verify_rows.py)."""
    import numpy as np
    import torch

    from tensorgpt.export import verify_rows
    from tests.conftest import build_checkpoint

    ckpt = build_checkpoint(
        tmp_path / "deep", "llama", num_hidden_layers=3, tie_word_embeddings=False
    )
    text = tmp_path / "calib.txt"
    text.write_text("the cat sat on the mat. " * 40)
    spec = CompressionSpec(method="tc", bits_per_weight=4.0, calib_text=str(text))
    manifest = export_model(str(ckpt), tmp_path / "out", spec, log=lambda _: None, stream=True)
    info, check = manifest["embedding_info"], manifest["verification"]
    assert info["calibration"].startswith("no model run (--stream)")
    assert info["calibration_tokens"] > 0 and info["bits_per_weight"] <= 4.0
    assert check["checked"] == (
        "layers 0 and 2 of 3, with the embedding and head "
        "(the table's rows decoded from their codes where looked up)"
    )
    assert check["passed"] and check["max_abs_logit_diff"] <= check["tolerance"]

    # the two modules alone: the same outputs as the dense embedding and head
    g = torch.Generator().manual_seed(0)
    table, head = torch.randn(50, 8, generator=g), torch.randn(50, 8, generator=g)
    embedding = torch.nn.Embedding(50, 8, padding_idx=49)
    hook = verify_rows.RowsOnDemand(embedding, lambda i: table[i].numpy())
    ids = torch.tensor([[3, 7, 3, 49], [0, 7, 12, 12]])
    assert torch.equal(embedding(ids), table[ids]) and len(hook.index) == 5
    chunked = verify_rows.ChunkedHead(lambda a, b: head[a:b].numpy(), 50, 8, np.ones(50))
    chunked.chunk = 7  # rows per chunk: 8 chunks, the last one short
    hidden = torch.randn(2, 3, 8, generator=g)
    torch.testing.assert_close(chunked(hidden), hidden @ head.T + 1, rtol=1e-6, atol=1e-6)


@SLOW
def test_an_export_killed_mid_way_restarts_cleanly(tiny_llama, tmp_path):
    """SIGKILL (no cleanup code runs) once the export has begun writing model.onnx.data:
    OUT_DIR is not created, and the next export into it removes the killed one's staging
    folder, then writes a complete, verified folder."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "tensorgpt", "export", str(tiny_llama), str(out), "--stream"]
    proc = subprocess.Popen(cmd + ["--quantize", "q4"], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    staged = []
    while time.monotonic() < deadline and proc.poll() is None:
        staged = [d for d in tmp_path.glob(".out.tmp-*") if (d / "model.onnx.data").is_file()]
        if staged:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    assert proc.wait() == -signal.SIGKILL, "the export finished before it could be killed"
    assert not out.exists() and staged[0].is_dir()  # half-written, and only in the staging

    lines: list[str] = []
    exporter.export_model(
        str(tiny_llama), out, CompressionSpec(), quantize="q4", log=lines.append, stream=True
    )
    assert any("removed .out.tmp-" in line for line in lines)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["verification"]["passed"]
