"""Every user mistake ends as one line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tensorgpt.cli import main
from tensorgpt.runtime_demo.generate import generate_batch
from tensorgpt.runtime_demo.perplexity import perplexity
from tensorgpt.runtime_demo.session import ExportedModel


def _copy(toy_dir: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "copy"
    shutil.copytree(toy_dir, folder)
    return folder


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str], fragment: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert fragment in err, err


@pytest.mark.parametrize("command", ["run", "eval", "bench"])
def test_missing_folder(
    command: str, tmp_path: Path, toy_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = {"run": ["--prompt", "the cat"], "eval": ["--text", str(toy_dir / "tokenizer.json")]}
    _fails([command, str(tmp_path / "nope"), *extra.get(command, [])], capsys, "does not exist")


def test_folder_without_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fails(["run", str(tmp_path), "--prompt", "the cat"], capsys, "has no model.onnx")


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_model(
    damage: str, toy_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _copy(toy_dir, tmp_path)
    model = folder / "model.onnx"
    data = model.read_bytes()
    model.write_bytes(
        {"garbage": b"not a model" * 10, "truncated": data[: len(data) // 3], "empty": b""}[damage]
    )
    # The integrity check refuses it by name; loading it anyway still fails on one line.
    _fails(["run", str(folder), "--prompt", "the cat"], capsys, "model.onnx has")
    argv = ["run", str(folder), "--prompt", "the cat", "--skip-integrity-check"]
    _fails(argv, capsys, "cannot load")


def test_model_from_another_tool(
    toy_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "other"
    folder.mkdir()
    shutil.copy(toy_dir / "model.onnx", folder)
    _fails(["run", str(folder), "--prompt", "the cat"], capsys, "no manifest.json")


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda m: m.update(format="something-else"), "not a tensorgpt manifest"),
        (lambda m: m.update(format_version=99), "format_version"),
        (lambda m: m["config"].pop("head_dim"), "config lacks head_dim"),
        (lambda m: m["config"].update(num_layers=3), "do not match the manifest"),
        (lambda m: m["config"].update(num_kv_heads=4), "does not match the manifest"),
        (lambda m: m["config"].update(vocab_size=40), "vocab_size"),
    ],
)
def test_manifest_does_not_fit(
    edit, fragment: str, toy_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _copy(toy_dir, tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    edit(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    _fails(["run", str(folder), "--prompt", "the cat"], capsys, fragment)


def test_manifest_not_json(
    toy_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _copy(toy_dir, tmp_path)
    (folder / "manifest.json").write_text("{not json")
    _fails(["run", str(folder), "--prompt", "the cat"], capsys, "not valid JSON")


def test_empty_prompt(toy_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fails(["run", str(toy_dir), "--prompt", ""], capsys, "--prompt is empty")
    _fails(["run", str(toy_dir), "--prompt", "   "], capsys, "--prompt is empty")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n\n")
    _fails(["run", str(toy_dir), "--prompts", str(prompts)], capsys, "has no prompts")
    prompts.write_text("the cat\n\na dog\n")
    _fails(["run", str(toy_dir), "--prompts", str(prompts)], capsys, "line 2 is empty")


def test_empty_text(toy_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = tmp_path / "empty.txt"
    text.write_text(" \n")
    _fails(["eval", str(toy_dir), "--text", str(text)], capsys, "is empty")
    text.write_text("cat")  # one token: nothing to predict
    _fails(["eval", str(toy_dir), "--text", str(text)], capsys, "needs at least 2")


def test_missing_text_file(
    toy_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _fails(["eval", str(toy_dir), "--text", str(tmp_path / "none.txt")], capsys, "none.txt")


def test_prompt_longer_than_context(toy_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    long_prompt = " ".join(["cat"] * 33)  # the toy's context is 32 positions
    _fails(["run", str(toy_dir), "--prompt", long_prompt], capsys, "max_position_embeddings")
    _fails(["eval", str(toy_dir), "--text", __file__, "--window", "64"], capsys, "exceeds")
    _fails(["bench", str(toy_dir)], capsys, "exceed the model's context")


def test_token_id_out_of_range(toy_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fails(["run", str(toy_dir), "--prompt-ids", "2,99"], capsys, "token id 99 is out of range")
    _fails(["run", str(toy_dir), "--prompt-ids", "-1"], capsys, "out of range")
    _fails(["run", str(toy_dir), "--prompt-ids", "2,x"], capsys, "must be integers")
    model = ExportedModel(toy_dir)
    with pytest.raises(ValueError, match="out of range"):
        perplexity(model, [2, 3, 32], window=4)
    with pytest.raises(ValueError, match="out of range"):
        generate_batch(model, [[2, 3], [40]])
    with pytest.raises(ValueError, match="out of range"):
        model.forward(np.array([[32]]), np.ones((1, 1)), np.zeros((1, 1)), model.empty_past(1))


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--threads", "-1"], "--threads"),
        (["--temperature", "-0.5"], "--temperature"),
        (["--top-p", "0"], "--top-p"),
        (["--top-k", "-3"], "--top-k"),
        (["--max-new-tokens", "0"], "--max-new-tokens"),
    ],
)
def test_bad_run_options(
    argv: list[str], fragment: str, toy_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _fails(["run", str(toy_dir), "--prompt", "the cat", *argv], capsys, fragment)


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--window", "1"], "--window"),
        (["--stride", "9"], "--stride"),
        (["--max-tokens", "1"], "--max-tokens"),
    ],
)
def test_bad_eval_options(
    argv: list[str], fragment: str, toy_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _fails(["eval", str(toy_dir), "--text", __file__, "--window", "8", *argv], capsys, fragment)
