"""Damaged and hostile export folders, built the way a flaky copy or an attacker would.

One real export (tiny Llama, q4 weights, split load written, so every file kind is there) is
copied and damaged per test. Every case must end as exit 2 with one stderr line naming the
file and the problem, before anything is run, allocated or read outside the folder.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tensorgpt.cli import main

PROMPT = ["--prompt-ids", "3 17 42"]


@pytest.fixture(scope="module")
def export_dir(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    from tensorgpt.export import split_load
    from tensorgpt.export.exporter import export_model

    folder = tmp_path_factory.mktemp("hostile") / "q4"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(split_load, "MIN_FRONTIER_BYTES", 0)
        export_model(str(tiny_llama), folder, quantize="q4", log=lambda _: None)
    return folder


@pytest.fixture
def copy(export_dir: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "copy"
    shutil.copytree(export_dir, folder)
    return folder


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str], *fragments: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err
    return err


def _edit_manifest(folder: Path, edit: Callable[[dict], object]) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    edit(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _flip(path: Path, count: int = 64) -> None:
    """What a flaky link does: bytes changed in the middle, the size unchanged."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    for i in range(middle, middle + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


# ---------------------------------------------------------------------------- damaged copies


@pytest.mark.parametrize("name", ["model.onnx", "decode.onnx", "body.onnx", "tokenizer.json"])
def test_flipped_bytes_are_refused_by_name(
    name: str, copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _flip(copy / name)
    _fails(["run", str(copy), *PROMPT], capsys, f"{copy / name} does not match", "sha256")
    err = _fails(["verify", str(copy)], capsys, "do not match the manifest", name)
    assert name in err


def test_corrupt_weights_refused_by_every_command(
    copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _flip(copy / "model.onnx")
    text = tmp_path / "t.txt"
    text.write_text("The cat sat on the mat. " * 20)
    for argv in (
        ["eval", str(copy), "--text", str(text)],
        ["bench", str(copy), "--prompt-tokens", "4", "--decode-tokens", "2", "--repeats", "1"],
        ["compare", str(copy), "--no-speed", "--text", str(text)],
        ["split", str(copy)],
    ):
        _fails(argv, capsys, "model.onnx", "does not match")
    # the split refused: the manifest still describes the intact export
    assert json.loads((copy / "manifest.json").read_text())["files"]["model.onnx"]["sha256"]


def test_skip_option_loads_a_damaged_copy_anyway(
    copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (copy / "tokenizer.json").write_text((copy / "tokenizer.json").read_text() + " ")
    assert main(["run", str(copy), *PROMPT, "--max-new-tokens", "2", "--skip-integrity-check"]) == 0
    capsys.readouterr()


def test_truncated_copy_names_file_and_sizes(
    copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = copy / "model.onnx"
    size = model.stat().st_size
    with open(model, "r+b") as f:
        f.truncate(size // 2)
    _fails(["run", str(copy), *PROMPT], capsys, "model.onnx has", f"records {size}")


def test_swapped_tokenizer_same_vocab_is_refused(
    copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Same vocabulary size, different merges: garbage text unless refused."""
    data = json.loads((copy / "tokenizer.json").read_text())
    data["model"]["merges"] = list(reversed(data["model"]["merges"]))
    (copy / "tokenizer.json").write_text(json.dumps(data))
    _fails(["run", str(copy), "--prompt", "the cat"], capsys, "tokenizer.json", "since the export")


def test_verify_passes_an_intact_folder(export_dir: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["verify", str(export_dir)]) == 0
    out = capsys.readouterr().out
    for name in ("model.onnx", "decode.onnx", "body.onnx", "tokenizer.json"):
        assert f"{name}" in out
    assert "all 4 files match" in out


def test_older_manifest_without_records_is_not_called_verified(
    copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _edit_manifest(copy, lambda m: m.pop("files"))
    _fails(["verify", str(copy)], capsys, "records no hash", "body.onnx")
    # the hashes an older manifest does hold still protect the load
    _flip(copy / "model.onnx")
    _fails(["run", str(copy), *PROMPT], capsys, "model.onnx does not match")


# ---------------------------------------------------------------------------- hostile paths


@pytest.mark.parametrize(
    "path",
    ["/etc/passwd", "../../outside/decode.onnx", "sub/decode.onnx", "..", "", "C:decode.onnx"],
)
@pytest.mark.parametrize("key", ["decode", "body"])
def test_split_paths_must_be_plain_names(
    key: str, path: str, copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _edit_manifest(copy, lambda m: m["split_load"].update({key: path}))
    for argv in (["run", str(copy), *PROMPT, "--skip-integrity-check"], ["verify", str(copy)]):
        _fails(argv, capsys, f"split_load.{key} must be a plain file name")


def test_symlink_out_of_the_folder_is_refused(
    copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.move(copy / "decode.onnx", outside / "decode.onnx")
    (copy / "decode.onnx").symlink_to(outside / "decode.onnx")
    _fails(["run", str(copy), *PROMPT, "--skip-integrity-check"], capsys, "leads outside")


def test_file_record_names_must_be_plain(copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _edit_manifest(copy, lambda m: m["files"].update({"../x": {"bytes": 1, "sha256": "0" * 64}}))
    _fails(["run", str(copy), *PROMPT], capsys, "plain file name")
    _edit_manifest(copy, lambda m: m["files"].pop("../x"))
    _edit_manifest(copy, lambda m: m["files"]["model.onnx"].update(sha256="not hex"))
    _fails(["run", str(copy), *PROMPT], capsys, "files.model.onnx.sha256")


# ---------------------------------------------------------------------------- hostile numbers


def test_huge_layer_count_is_refused_before_allocation(
    copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _edit_manifest(copy, lambda m: m["config"].update(num_layers=100_000_000))
    start = time.perf_counter()
    _fails(["run", str(copy), *PROMPT], capsys, "num_layers 100000000")
    assert time.perf_counter() - start < 30  # a list of 2e8 names alone takes minutes


@pytest.mark.parametrize(
    ("key", "value"),
    [("max_position_embeddings", 4096), ("hidden_size", 128), ("vocab_size", 10_000)],
)
def test_config_larger_than_the_graph_is_refused(
    key: str, value: int, copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _edit_manifest(copy, lambda m: m["config"].update({key: value}))
    _fails(["run", str(copy), *PROMPT], capsys, f"config.{key} {value} does not match the graph")


def test_special_token_out_of_range(copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _edit_manifest(copy, lambda m: m["config"].update(eos_token_id=[0, 10**9]))
    _fails(["run", str(copy), *PROMPT], capsys, "special token id 1000000000 is out of range")
