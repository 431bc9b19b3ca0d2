"""`tensorgpt compare`: columns on real tiny exports, the Pareto front, the plot, the cache,
bad inputs, and no torch on the runtime side."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tensorgpt.cli import main
from tensorgpt.compare import (
    CACHE_NAME,
    SpeedOptions,
    TextOptions,
    compare,
    measure_perplexity,
    pareto_front,
)
from tensorgpt.compare_table import format_table, to_markdown

FAST_SPEED = SpeedOptions(prompt_tokens=4, decode_tokens=2, repeats=1, rounds=1)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def text_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("text") / "text.txt"
    path.write_text(
        "The tower is 324 metres tall, about the same height as an 81-storey building. "
        "Its base is square, measuring 125 metres on each side. " * 8
    )
    return path


@pytest.fixture(scope="module")
def tiny_exports(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The tiny Llama exported uncompressed and with int8 rows (read-only for tests)."""
    pytest.importorskip("torch")
    from tensorgpt.export.compress import CompressionSpec
    from tensorgpt.export.exporter import export_model

    root = tmp_path_factory.mktemp("compare")
    folders = []
    for method in ("none", "int8-rows"):
        folder = root / method
        export_model(str(tiny_llama), folder, CompressionSpec(method=method), log=lambda _m: None)
        folders.append(folder)
    return folders


@pytest.fixture
def exports(tiny_exports: list[Path], tmp_path: Path) -> list[Path]:
    """Fresh copies: the measurement cache is written into the folders."""
    return [Path(shutil.copytree(f, tmp_path / f.name)) for f in tiny_exports]


def _text(path: Path) -> TextOptions:
    return TextOptions(str(path), max_tokens=200, window=64)


# ---------------------------------------------------------------------------- pure functions


def test_pareto_front_on_a_hand_made_set() -> None:
    points = [
        (1.0, 10.0),  # 0 front
        (2.0, 5.0),  # 1 front (a tie with 4: neither dominates the other)
        (3.0, 5.0),  # 2 dominated by 1: larger, not better
        (4.0, 1.0),  # 3 front: the best perplexity
        (2.0, 5.0),  # 4 front
        (5.0, 20.0),  # 5 dominated by everything smaller
        (0.5, 50.0),  # 6 front: the smallest file
    ]
    assert pareto_front(points) == [0, 1, 3, 4, 6]
    assert pareto_front([]) == []
    assert pareto_front([(3.0, 3.0)]) == [0]


def test_plot_is_a_valid_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib.image

    from tensorgpt.plot import plot_size_vs_perplexity

    rows = [
        {"name": n, "file_bytes": b, "perplexity": p}
        for n, b, p in (("none", 540e6, 25.5), ("int8", 140e6, 41.0), ("tt-r4", 500e6, 3e6))
    ]
    path = plot_size_vs_perplexity({"rows": rows}, tmp_path / "plot.png", "test")
    assert path.read_bytes()[:8] == PNG_MAGIC
    image = matplotlib.image.imread(str(path))
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


# ---------------------------------------------------------------------------- on tiny exports


def test_compare_fills_every_column(exports: list[Path], text_file: Path) -> None:
    report = compare(exports, _text(text_file), FAST_SPEED)
    base, int8 = report["rows"]
    assert report["baseline"] == "none"
    assert base["file_ratio"] == 1.0 and base["ppl_change_pct"] == 0.0
    assert base["mae"] is None  # method none has no reconstruction error
    for key in ("file_bytes", "embedding_bytes", "embedding_ratio", "file_ratio", "mae"):
        assert int8[key] is not None and int8[key] > 0, key
    for key in ("norm_mae", "rel_error", "perplexity", "ppl_change_pct", "decode_ms", "pareto"):
        assert int8[key] is not None, key
    assert int8["embedding_ratio"] > 3.5 and int8["file_ratio"] > 1.0
    assert int8["pareto"] is True  # smaller, and int8 rows keep the perplexity
    assert abs(int8["ppl_change_pct"]) < 5.0
    assert int8["file_bytes"] == (exports[1] / "model.onnx").stat().st_size

    table = format_table(report)
    for header in ("file MB", "file x", "emb MB", "emb x", "MAE", "norm-MAE", "rel err", "ppl"):
        assert header in table
    assert "ppl change" in table and "ms/token" in table and "front" in table
    markdown = to_markdown(report, "tiny")
    assert markdown.count("\n| ") == 4  # header, alignment, two rows
    assert "Uncompressed (`none`)" in markdown


def test_perplexity_is_cached_until_the_model_changes(exports: list[Path], text_file: Path) -> None:
    folder = exports[0]
    first = measure_perplexity(folder, _text(text_file))
    second = measure_perplexity(folder, _text(text_file))
    assert not first["cached"] and second["cached"]
    assert second["perplexity"] == first["perplexity"]
    assert (folder / CACHE_NAME).is_file()
    # Other text options are another entry; a re-exported model invalidates the old ones.
    assert not measure_perplexity(folder, TextOptions(str(text_file), 100, 64))["cached"]
    stat = (folder / "model.onnx").stat()
    os.utime(folder / "model.onnx", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert not measure_perplexity(folder, _text(text_file))["cached"]


def test_cache_key_covers_tokenizer_and_manifest(
    exports: list[Path], text_file: Path, tmp_path: Path
) -> None:
    """A swapped tokenizer scores another tokenization: a cached number must not be reused
    (and with the integrity check on, the swapped folder is refused outright)."""
    import shutil

    from tensorgpt.common.integrity import IntegrityError

    folder = tmp_path / "copy"
    shutil.copytree(exports[0], folder)
    assert not measure_perplexity(folder, _text(text_file))["cached"]
    assert measure_perplexity(folder, _text(text_file))["cached"]
    tokenizer = folder / "tokenizer.json"
    tokenizer.write_text(tokenizer.read_text() + "\n")  # same tokenizer, other bytes
    with pytest.raises(IntegrityError, match="tokenizer.json"):
        measure_perplexity(folder, _text(text_file))
    assert not measure_perplexity(folder, _text(text_file), check_integrity=False)["cached"]
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["note"] = "edited"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert not measure_perplexity(folder, _text(text_file), check_integrity=False)["cached"]


def test_cli_writes_json_markdown_and_plot(
    exports: list[Path], text_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    pytest.importorskip("matplotlib")
    md, png = tmp_path / "r.md", tmp_path / "r.png"
    argv = ["compare", *map(str, exports), "--text", str(text_file), "--max-tokens", "200"]
    argv += ["--window", "64", "--decode-tokens", "2", "--json", "--markdown", str(md)]
    assert main([*argv, "--plot", str(png)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in report["rows"]] == ["none", "int8-rows"]
    assert "| int8-rows |" in md.read_text()
    assert png.read_bytes()[:8] == PNG_MAGIC


def test_sizes_only_without_text(exports: list[Path]) -> None:
    report = compare(exports, text=None, speed=None)
    assert all(r["perplexity"] is None and r["decode_ms"] is None for r in report["rows"])
    table = format_table(report)
    assert "ppl" not in table and "ms/token" not in table and "emb x" in table


# ---------------------------------------------------------------------------- bad input


def _edit_manifest(folder: Path, **changes: object) -> None:
    path = folder / "manifest.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | changes))


def test_not_an_export_is_a_one_line_error(
    exports: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no manifest.json"):
        compare([exports[0], empty], speed=None)
    with pytest.raises(ValueError, match="not a folder"):
        compare([tmp_path / "missing"], speed=None)
    _edit_manifest(exports[1], format="something-else")
    with pytest.raises(ValueError, match="not a tensorgpt manifest"):
        compare(exports, speed=None)
    assert main(["compare", str(empty), "--no-speed"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tensorgpt compare: error:") and "\n" not in err


def test_mixed_tokenizers_are_refused(exports: list[Path], capsys: pytest.CaptureFixture) -> None:
    _edit_manifest(exports[1], tokenizer={"name_or_path": "other", "sha256": "0" * 64})
    with pytest.raises(ValueError, match="mixed tokenizers"):
        compare(exports, speed=None)
    assert main(["compare", *map(str, exports), "--no-speed"]) == 2
    assert "not comparable" in capsys.readouterr().err


def test_text_options_need_text(exports: list[Path]) -> None:
    assert main(["compare", str(exports[0]), "--window", "64", "--no-speed"]) == 2
    assert main(["compare", str(exports[0]), "--plot", "x.png", "--no-speed"]) == 2


# ---------------------------------------------------------------------------- runtime only

_NO_TORCH_SCRIPT = """
import json, sys
from tensorgpt.compare import SpeedOptions, TextOptions, compare
from tensorgpt.compare_table import to_markdown
report = compare(
    [sys.argv[1]], TextOptions(sys.argv[2], window=8), SpeedOptions(None, 4, 2, 1, 1)
)
to_markdown(report)
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in sys.argv[3:])))
"""


def test_compare_never_imports_torch(toy_dir: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(toy_dir, tmp_path / "toy"))  # the cache writes into it
    text = tmp_path / "text.txt"
    text.write_text("the cat sat on the mat a dog ran on the mat\n")
    forbidden = ("torch", "transformers", "onnx", "matplotlib")
    done = subprocess.run(
        [sys.executable, "-c", _NO_TORCH_SCRIPT, str(folder), str(text), *forbidden],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_timing_rounds_interleave_and_keep_the_best(
    exports: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rounds go A B, A B (not A A, B B) and each variant keeps its fastest round."""
    import tensorgpt.compare as cmp

    calls: list[str] = []
    slow_then_fast = {0: 9.0, 1: 5.0, 2: 7.0}

    def fake_speed(folder, speed, check_integrity=True):
        calls.append(Path(folder).name)
        ms = slow_then_fast[sum(c == Path(folder).name for c in calls) - 1]
        return {
            "decode_ms_median": ms,
            "decode_ms_p90": ms,
            "load_s": ms / 10,
            "ttft_ms": ms,
            "load_peak_rss_mb": 100 * ms,
        }

    monkeypatch.setattr(cmp, "measure_speed", fake_speed)
    report = compare(exports[:2], None, SpeedOptions(rounds=3), use_cache=False)
    names = [p.name for p in exports[:2]]
    assert calls == names * 3
    assert [r["decode_ms"] for r in report["rows"]] == [5.0, 5.0]
    assert [r["load_s"] for r in report["rows"]] == [0.5, 0.5]
    assert [r["load_peak_mb"] for r in report["rows"]] == [500.0, 500.0]  # lowest round


def test_several_texts_report_every_domain_and_the_worst(
    exports: list[Path], text_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    code = tmp_path / "code.txt"
    code.write_text("def f(x):\n    return [x * i for i in range(10)]\n\n" * 20)
    argv = ["compare", *map(str, exports), "--text", str(text_file), str(code)]
    argv += ["--max-tokens", "200", "--window", "64", "--no-speed", "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert [t["name"] for t in report["texts"]] == ["text", "code"]
    base, int8 = report["rows"]
    assert set(int8["perplexity_by_text"]) == {"text", "code"}
    by = int8["ppl_change_by_text"]
    for name, ppl in int8["perplexity_by_text"].items():  # each domain against its own base
        assert by[name] == pytest.approx(100 * (ppl / base["perplexity_by_text"][name] - 1))
    assert int8["worst_text"] == max(by, key=by.get)
    assert int8["ppl_change_pct"] == by[int8["worst_text"]]
    assert int8["perplexity"] == int8["perplexity_by_text"]["text"]  # the first text's
    assert main(argv[:-1]) == 0  # the table, then one line per variant with every domain
    out = capsys.readouterr().out
    assert f"int8-rows: text {by['text']:+.1f}%, code {by['code']:+.1f}%" in out
