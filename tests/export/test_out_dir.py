"""What an export may replace (export/target.py) and how it writes (export/atomic.py):
--force guards, the OUT_DIR lock, stale staging folders, a Ctrl-C that Python swallowed."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tensorgpt.cli import main as cli_main
from tensorgpt.export.atomic import STAGING_MARKER, out_dir_lock, remove_stale
from tensorgpt.export.target import check_target


def _export_folder(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"format": "tensorgpt-export"}))
    (folder / "model.onnx").write_bytes(b"old")
    return folder


@pytest.fixture
def no_load(monkeypatch):
    """Every refusal must come before the model is loaded."""

    def loaded(*args, **kwargs):
        raise AssertionError("the model was loaded before the target was checked")

    monkeypatch.setattr("tensorgpt.export.exporter.load", loaded)


@pytest.mark.parametrize(
    ("out", "fragment"),
    [
        ("", "OUT_DIR is empty"),
        (".", "is the working directory"),
        ("..", "contains the working directory"),
        ("/", "filesystem root"),
        ("SRC", "is the source model"),
        ("SRC/..", "contains the source model"),
    ],
)
def test_force_never_replaces_what_it_must_not(
    out: str, fragment: str, tiny_gpt2: Path, tmp_path: Path, monkeypatch, capsys, no_load
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    monkeypatch.chdir(work)
    out = out.replace("SRC", str(tiny_gpt2))
    before = sorted(os.listdir(tiny_gpt2))
    assert cli_main(["export", str(tiny_gpt2), out, "--force"]) == 2
    err = capsys.readouterr().err
    assert fragment in err and len(err.strip().splitlines()) == 1, err
    assert (work / "notes.txt").read_text() == "mine"
    assert sorted(os.listdir(tiny_gpt2)) == before


def test_gguf_source_folder_is_protected(tmp_path: Path, capsys, no_load) -> None:
    gguf = tmp_path / "models" / "m.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF")
    assert cli_main(["export", str(gguf), str(gguf.parent), "--force"]) == 2
    assert "contains the source model" in capsys.readouterr().err
    assert gguf.exists()


def test_force_replaces_only_an_export_or_an_empty_folder(tmp_path: Path) -> None:
    other = tmp_path / "photos"
    other.mkdir()
    (other / "a.jpg").write_bytes(b"x")
    with pytest.raises(ValueError, match="not a tensorgpt export"):
        check_target(other, force=True)
    (tmp_path / "empty").mkdir()
    assert check_target(tmp_path / "empty", force=True) == (tmp_path / "empty").resolve()
    export = _export_folder(tmp_path / "old-export")
    assert check_target(export, force=True) == export.resolve()
    with pytest.raises(ValueError, match="pass --force"):
        check_target(export, force=False)


def test_second_export_of_the_same_out_dir_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with out_dir_lock(out):
        with pytest.raises(ValueError, match="being written by another export"), out_dir_lock(out):
            pass
        # another process sees the same lock
        probe = (
            "import sys; from pathlib import Path; from tensorgpt.export.atomic import out_dir_lock\n"
            "try:\n    out_dir_lock(Path(sys.argv[1])).__enter__()\n"
            "except ValueError as e:\n    print(e)"
        )
        done = subprocess.run(
            [sys.executable, "-c", probe, str(out)], capture_output=True, text=True, check=True
        )
        assert f"pid {os.getpid()}" in done.stdout
    assert list(tmp_path.iterdir()) == []  # the lock file goes with the export
    with out_dir_lock(out):  # and the folder can be exported again
        pass


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_folders_of_killed_exports_are_removed(tmp_path: Path) -> None:
    dead = _dead_pid()
    stage = tmp_path / f".out.tmp-{dead}-abc123"
    stage.mkdir()
    (stage / STAGING_MARKER).touch()
    (stage / "model.onnx").write_bytes(b"half")
    backup = _export_folder(tmp_path / f".out.old-{dead}")
    alive = tmp_path / f".out.tmp-{os.getpid()}-def456"  # an export still running
    alive.mkdir()
    (alive / STAGING_MARKER).touch()
    foreign = tmp_path / f".cache.tmp-{dead}-x"  # someone else's folder with a similar name
    foreign.mkdir()
    (foreign / "data").write_text("keep")
    messages: list[str] = []
    removed = remove_stale(tmp_path, messages.append)
    assert sorted(removed) == sorted([stage, backup])
    assert alive.exists() and foreign.exists() and not stage.exists() and not backup.exists()
    assert len(messages) == 2


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_ctrl_c_swallowed_by_gc_aborts_the_export(
    tiny_gpt2: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    """A KeyboardInterrupt raised in a finalizer that gc.collect() runs is dropped by Python
    ("Exception ignored in ..."); the export must still stop, exit 130, and publish nothing."""

    class Finalizer:
        def __del__(self):
            signal.raise_signal(signal.SIGINT)

    real_collect = gc.collect

    def collect_interrupted(*args):
        Finalizer()  # its __del__ runs at once and the interrupt is raised inside it
        return real_collect(*args)

    monkeypatch.setattr("tensorgpt.export.exporter.gc.collect", collect_interrupted)
    out = tmp_path / "out"
    # as in a terminal (a test run started in the background inherits SIGINT ignored)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        assert cli_main(["export", str(tiny_gpt2), str(out)]) == 130
    finally:
        signal.signal(signal.SIGINT, previous)
    assert "interrupted" in capsys.readouterr().err
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no staging folder or lock file left
