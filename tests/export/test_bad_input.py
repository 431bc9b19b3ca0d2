"""Every user mistake gets one line on stderr, exit code 2, and no output folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tensorgpt.cli import main as cli_main


def _run(args: list[str], capsys) -> tuple[int, str]:
    code = cli_main(["export", *args])
    err = capsys.readouterr().err.strip()
    return code, err


def _assert_one_line_error(code: int, err: str, *words: str) -> None:
    """Exit 2, no traceback, and exactly one error line (progress lines may precede it)."""
    assert code == 2
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("tensorgpt export: error:")]
    assert len(errors) == 1, err
    for word in words:
        assert word in errors[0], err


def test_missing_local_folder(tmp_path, capsys):
    code, err = _run(["./no/such/checkpoint", str(tmp_path / "out")], capsys)
    _assert_one_line_error(code, err, "not found")
    assert not (tmp_path / "out").exists()


def test_missing_gguf(tmp_path, capsys):
    code, err = _run([str(tmp_path / "model.gguf"), str(tmp_path / "out")], capsys)
    _assert_one_line_error(code, err, "GGUF")


def test_folder_without_config(tmp_path, capsys):
    (tmp_path / "ckpt").mkdir()
    code, err = _run([str(tmp_path / "ckpt"), str(tmp_path / "out")], capsys)
    _assert_one_line_error(code, err, "config.json")


def test_corrupt_checkpoint(tiny_gpt2, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in tiny_gpt2.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])  # truncated download
    code, err = _run([str(broken), str(tmp_path / "out")], capsys)
    _assert_one_line_error(code, err, "could not load")
    assert not (tmp_path / "out").exists()


def test_unsupported_architecture(tmp_path, capsys):
    """A model the generic adapter cannot honour (LFM2's convolution layers need a cache of
    their own): one line naming what it has, the hook it needs and the file to add."""
    import torch
    from transformers import Lfm2Config, Lfm2ForCausalLM

    from tests.conftest import build_tokenizer

    ckpt = tmp_path / "lfm2"
    ckpt.mkdir()
    vocab = len(build_tokenizer(ckpt))
    torch.manual_seed(0)
    cfg = Lfm2Config(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        layer_types=["conv", "full_attention"],
    )
    Lfm2ForCausalLM(cfg).save_pretrained(str(ckpt))
    code, err = _run([str(ckpt), str(tmp_path / "out")], capsys)
    _assert_one_line_error(
        code,
        err,
        "unsupported architecture Lfm2ForCausalLM",
        "cache for non-attention layers",
        "tensorgpt/models/lfm2.py",
    )


@pytest.mark.parametrize("stream", [[], ["--stream"]])
def test_encoder_decoder_model_is_refused(tmp_path, capsys, stream):
    """T5: no causal-LM class in transformers, so no adapter can help; said in one line
    instead of transformers' list of every class it knows."""
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(vocab_size=64, d_model=16, d_ff=32, num_layers=1, num_heads=2, d_kv=8)
    T5ForConditionalGeneration(config).save_pretrained(str(tmp_path / "t5"))
    code, err = _run([str(tmp_path / "t5"), str(tmp_path / "out"), *stream], capsys)
    _assert_one_line_error(code, err, "T5ForConditionalGeneration", "encoder-decoder")
    assert not (tmp_path / "out").exists()


def test_packed_runtime_names_the_hooks_it_lacks(tmp_path, capsys):
    """export/packed/ does not apply the embedding scale or logit hooks yet: Gemma is refused."""
    from tests.conftest import build_checkpoint

    ckpt = build_checkpoint(tmp_path / "gemma", "gemma")
    args = [str(ckpt), str(tmp_path / "out"), "--quantize", "q4", "--runtime", "packed"]
    code, err = _run(args, capsys)
    _assert_one_line_error(
        code, err, "--runtime packed does not support GemmaForCausalLM", "embedding scale"
    )
    assert not (tmp_path / "out").exists()


def test_gguf_architecture_without_a_transformers_class_is_refused(tmp_path, capsys):
    """transformers' GGUF reader maps `deci` config keys but has no model class for it."""
    gguf = _tiny_gguf(tmp_path / "deci.gguf", arch="deci")
    code, err = _run([str(gguf), str(tmp_path / "out")], capsys)
    _assert_one_line_error(code, err, "'deci'", "no model class", "AutoModelForCausalLM")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args, words",
    [
        (["--method", "tt", "--rank", "0"], ["rank"]),
        (["--method", "tt", "--factors", "4,4,3"], ["mode_sizes"]),
        (["--method", "tt-matrix", "--factors", "5,5"], ["factor"]),
        (["--method", "tt", "--rel-error", "1.5"], ["rel-error"]),
        (["--rank", "4"], ["--method"]),
    ],
)
def test_invalid_compression_options(tiny_gpt2, tmp_path, capsys, args, words):
    code, err = _run([str(tiny_gpt2), str(tmp_path / "out"), *args], capsys)
    _assert_one_line_error(code, err, *words)
    assert not (tmp_path / "out").exists()


def test_no_write_permission(tiny_gpt2, capsys):
    # /proc refuses new folders even to root, so this is a real permission failure.
    code, err = _run([str(tiny_gpt2), "/proc/tensorgpt-export-test"], capsys)
    _assert_one_line_error(code, err)


def test_unknown_hub_id_offline(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tensorgpt",
            "export",
            "no-such-org/no-such-model-xyz",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=Path(__file__).parent,
    )
    _assert_one_line_error(
        proc.returncode, proc.stderr.strip(), "could not load model 'no-such-org/no-such-model-xyz'"
    )


def test_cli_offers_every_method_and_quantizer():
    import argparse

    from tensorgpt.export.commands import add_export_arguments
    from tensorgpt.export.methods import all_options, method_names
    from tensorgpt.export.quantizers import quantizer_names

    p = argparse.ArgumentParser()
    add_export_arguments(p)
    actions = {a.dest: a for a in p._actions}
    assert list(actions["method"].choices) == method_names()
    assert set(method_names()) >= {"none", "tt", "tt-matrix", "svd", "int8-rows", "int4-rows", "tc"}
    assert list(actions["quantize"].choices) == quantizer_names()
    assert set(quantizer_names()) >= {"none", "int8", "ort-int8", "q4"}
    assert {o.name for o in all_options()} <= set(actions)


def test_export_help_states_the_defaults_the_code_uses():
    import argparse

    from tensorgpt.export.commands import add_export_arguments
    from tensorgpt.export.methods.svd import DEFAULT_RANK as SVD_DEFAULT_RANK
    from tensorgpt.export.methods.tc import DEFAULT_BITS as TC_DEFAULT_BITS
    from tensorgpt.export.methods.tc import DEFAULT_BITS_ANY_DOMAIN as TC_ANY_DOMAIN

    parser = argparse.ArgumentParser()
    add_export_arguments(parser)
    helps = {a.dest: a.help for a in parser._actions}
    assert f"default: {TC_DEFAULT_BITS:g}," in helps["bits_per_weight"]
    assert f"; {TC_ANY_DOMAIN:g}, 6x, without" in helps["bits_per_weight"]
    assert f"default: {SVD_DEFAULT_RANK})" in helps["rank"]
    assert "tc: transform coding, calibrated on the model's own samples" in helps["method"]
    assert helps["method"].startswith("token-embedding compression (default: none)")


@pytest.mark.parametrize(
    ("extra", "named"),
    [(["--calib-mix", "yes"], "--calib-text"), (["--calib-mix", "maybe"], "yes or no")],
)
def test_tc_calib_mix_is_checked(tiny_gpt2, tmp_path, capsys, extra, named):
    args = [str(tiny_gpt2), str(tmp_path / "out"), "--method", "tc", *extra]
    code, err = _run(args, capsys)
    _assert_one_line_error(code, err, named)
    assert not (tmp_path / "out").exists()


def test_tc_healing_needs_a_calibration_text(tiny_gpt2, tmp_path, capsys):
    args = [str(tiny_gpt2), str(tmp_path / "out"), "--method", "tc", "--heal-steps", "2"]
    code, err = _run(args, capsys)
    _assert_one_line_error(code, err, "--calib-text")
    code, err = _run(
        [
            str(tiny_gpt2),
            str(tmp_path / "out"),
            "--method",
            "tc",
            "--calib-text",
            str(tmp_path / "nope.txt"),
        ],
        capsys,
    )
    _assert_one_line_error(code, err, "not found")


def test_tc_on_a_model_with_a_short_context(tiny_gpt2, tmp_path, capsys):
    """tiny GPT-2 has 256 positions: the calibration window (512) must shrink to fit, not
    index position 511 (it was an IndexError traceback)."""
    calib = tmp_path / "calib.txt"
    calib.write_text("The quick brown fox jumps over the lazy dog. It was a sunny day. " * 200)
    out = tmp_path / "out"
    code, err = _run(
        [
            str(tiny_gpt2),
            str(out),
            "--method",
            "tc",
            "--bits-per-weight",
            "4",
            "--calib-text",
            str(calib),
        ],
        capsys,
    )
    assert code == 0, err
    assert (out / "model.onnx").is_file()


def _tiny_gguf(path: Path, arch: str = "llama") -> Path:
    import numpy as np
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), arch)
    writer.add_vocab_size(64)  # else transformers logs a warning while reading the config
    writer.add_tensor("token_embd.weight", np.ones((64, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize("keep", [100, 2000])
def test_truncated_gguf_is_named(tmp_path, capsys, keep):
    whole = _tiny_gguf(tmp_path / "whole.gguf").read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(whole[:keep])
    code, err = _run([str(cut), str(tmp_path / "out")], capsys)
    _assert_one_line_error(code, err, str(cut))
    assert "truncated" in err
    assert not (tmp_path / "out").exists()


def test_source_path_is_stored_normalized(tiny_gpt2, monkeypatch):
    from tensorgpt.export.load import load

    monkeypatch.chdir(tiny_gpt2.parent)
    plain = load(tiny_gpt2.name).source
    assert load(f"./{tiny_gpt2.name}/").source == plain == tiny_gpt2.name


def test_capped_rank_is_said():
    from tensorgpt.export.compress import CompressionSpec, report_embedding

    said: list[str] = []
    ranks = {"ranks": [1, 2, 4, 2, 1]}
    report_embedding(CompressionSpec(method="tt", rank=1_000_000), ranks, said.append)
    capped = [line for line in said if "capped" in line]
    assert len(capped) == 1 and "--rank 1000000" in capped[0] and "capped at 4" in capped[0]
    said.clear()
    report_embedding(CompressionSpec(method="tt", rank=4), ranks, said.append)
    assert len(said) == 1 and said[0].startswith("embedding: method tt")
