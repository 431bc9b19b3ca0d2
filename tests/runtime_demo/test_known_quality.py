"""`tensorgpt run` says why it stopped and warns about a variant known to be broken."""

from __future__ import annotations

import os
import shutil

from tensorgpt import compare
from tensorgpt.cli import main
from tensorgpt.common.files import sha256_file
from tensorgpt.runtime_demo.known_quality import broken_warning, cached_perplexities


def _cache_perplexity(folder, text_file, value: float) -> None:
    """What `tensorgpt compare --text` stores after measuring the folder."""
    options = compare.TextOptions(str(text_file))
    key = compare._perplexity_key(folder, options, sha256_file(text_file))
    compare._store_cache(folder, key, {"perplexity": value}, lambda _m: None)


def test_run_warns_when_cached_perplexity_is_broken(toy_dir, tmp_path, capsys):
    folder = tmp_path / "export"
    shutil.copytree(toy_dir, folder)
    text = tmp_path / "text.txt"
    text.write_text("the cat sat on the mat\n", encoding="utf-8")
    vocab = 32  # toy_export.toy_config

    assert broken_warning(folder, vocab) is None  # nothing measured yet
    _cache_perplexity(folder, text, vocab * 0.5)  # worse than good, not worse than uniform
    assert broken_warning(folder, vocab) is None
    _cache_perplexity(folder, tmp_path / "text.txt", 3.8e6)  # same key: replaced
    assert [r["perplexity"] for r in cached_perplexities(folder)] == [3.8e6]

    assert main(["run", str(folder), "--prompt", "the cat", "--max-new-tokens", "3"]) == 0
    out = capsys.readouterr()
    assert "perplexity is 3.8e+06" in out.err and "32 tokens" in out.err
    assert out.out.startswith("the cat")  # the prompt is echoed before the continuation
    assert "stopped: " in out.err


def test_stale_measurement_is_ignored(toy_dir, tmp_path):
    folder = tmp_path / "export"
    shutil.copytree(toy_dir, folder)
    text = tmp_path / "text.txt"
    text.write_text("the cat sat\n", encoding="utf-8")
    _cache_perplexity(folder, text, 1e9)
    model = folder / "model.onnx"
    model.write_bytes(model.read_bytes())  # the export was redone: new mtime
    stat = model.stat()
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert cached_perplexities(folder) == []
    assert broken_warning(folder, 32) is None
