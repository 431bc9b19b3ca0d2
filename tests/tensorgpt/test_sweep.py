"""`tensorgpt sweep`: the grid, a real 2-variant sweep of the tiny Llama, resuming, bad input."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from tensorgpt import sweep
from tensorgpt.cli import main
from tensorgpt.sweep import (
    DEFAULT_GRID,
    Variant,
    default_grid,
    run_sweep,
    select,
    svd_rank_matching_tt,
    tt_matrix_params,
    tt_matrix_rank_for_ratio,
    tt_param_count,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------- the grid


def test_default_grid_has_the_baselines_and_the_papers_ranks() -> None:
    names = [name for name, _ in DEFAULT_GRID]
    assert len(set(names)) == len(names) and names[0] == "none"
    args = {name: " ".join(a) for name, a in DEFAULT_GRID}
    assert args["ort-int8"] == "--quantize ort-int8" and args["int8-matmuls"] == "--quantize int8"
    assert args["int8-rows"] == "--method int8-rows" and args["int4-rows"] == "--method int4-rows"
    for rank in (1, 2, 4, 8, 16):
        assert args[f"tt-r{rank}"] == f"--method tt --rank {rank}"


@pytest.mark.parametrize("vocab, dim", [(49152, 576), (50257, 768)])
def test_svd_rank_matches_tt4_bytes(vocab: int, dim: int) -> None:
    assert tt_param_count(768, 4) == 232  # the paper's table
    k = svd_rank_matching_tt(vocab, dim)
    tt4_bytes = vocab * tt_param_count(dim, 4) * 4
    assert 4 * k * (vocab + dim) <= tt4_bytes < 4 * (k + 1) * (vocab + dim)


@pytest.mark.parametrize("vocab, dim", [(49152, 576), (50257, 768)])
def test_tt_matrix_rank_gives_4_to_8x(vocab: int, dim: int) -> None:
    rank = tt_matrix_rank_for_ratio(vocab, dim)
    assert 4 <= vocab * dim / tt_matrix_params(vocab, dim, rank) <= 8


def test_names_are_filled_in_from_the_shape() -> None:
    grid = {v.name: v for v in default_grid()}
    svd = grid["svd-k{svd_rank}"]
    assert svd.needs_shape and not grid["tt-r4"].needs_shape
    assert svd.resolve({"svd_rank": 229, "ttm_rank": 125}) == Variant(
        "svd-k229", ("--method", "svd", "--rank", "229")
    )


def test_only_selects_and_rejects_unknown_names() -> None:
    assert [v.name for v in select(default_grid(), ["tt-r4", "none"])] == ["none", "tt-r4"]
    with pytest.raises(ValueError, match="unknown variant"):
        select(default_grid(), ["tt-r3"])


# ---------------------------------------------------------------------------- a real sweep


@pytest.fixture(scope="module")
def text_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("text") / "text.txt"
    path.write_text("The quick brown fox jumps over the lazy dog, then sleeps. " * 30)
    return path


@pytest.fixture(scope="module")
def swept(tiny_llama: Path, text_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`tensorgpt sweep` over two variants; the exports run as subprocesses."""
    pytest.importorskip("matplotlib")
    out = tmp_path_factory.mktemp("sweep") / "out"
    argv = ["sweep", str(tiny_llama), "--out", str(out), "--only", "none,int8-rows"]
    argv += ["--text", str(text_file), "--max-tokens", "200", "--window", "64"]
    assert main([*argv, "--decode-tokens", "2"]) == 0
    return out


def test_sweep_writes_variants_and_results(swept: Path) -> None:
    report = json.loads((swept / "results.json").read_text())
    assert [r["name"] for r in report["rows"]] == ["none", "int8-rows"]
    assert report["baseline"] == "none" and report["failed"] == {}
    assert all(r["perplexity"] and r["decode_ms"] for r in report["rows"])
    assert "| int8-rows |" in (swept / "results.md").read_text()
    assert (swept / "results.png").read_bytes()[:8] == PNG_MAGIC
    assert (swept / "logs" / "none.log").is_file()


def test_sweep_resumes_without_rebuilding_finished_variants(
    tiny_llama: Path, swept: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept = (swept / "none" / "model.onnx").stat().st_mtime_ns
    # What an interrupted run leaves: the variant's folder absent (exports are atomic) and,
    # after a SIGKILL, its staging folder.
    finished = shutil.move(swept / "int8-rows", tmp_path / "int8-rows")
    (swept / ".int8-rows.tmp-killed").mkdir()
    # The real export subprocess is covered by `swept`; here a copy stands in for it (fast).
    copy = "import shutil, sys; shutil.copytree(sys.argv[1], sys.argv[2])"
    commands: list[list[str]] = []

    def fake_export(model: str, folder: Path, args: list[str]) -> list[str]:
        commands.append([model, folder.name, *args])
        return [sys.executable, "-c", copy, str(finished), str(folder)]

    monkeypatch.setattr(sweep, "export_command", fake_export)
    measured: list[str] = []
    result = run_sweep(
        str(tiny_llama),
        swept,
        select(default_grid(), ["none", "int8-rows"]),
        measure=lambda folder: measured.append(folder.name),
        log=lambda _m: None,
    )
    assert commands == [[str(tiny_llama), "int8-rows", "--method", "int8-rows"]]
    assert result.skipped == ["none"] and result.built == ["int8-rows"] and not result.failed
    assert measured == ["none", "int8-rows"]
    assert (swept / "none" / "model.onnx").stat().st_mtime_ns == kept
    assert (swept / "int8-rows" / "manifest.json").is_file()
    assert not (swept / ".int8-rows.tmp-killed").exists()


def test_each_missing_variant_is_exported_once(
    tiny_llama: Path, swept: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A done variant between two missing ones must not start the second build twice."""
    out = tmp_path / "out"
    shutil.copytree(swept / "none", out / "none")
    copy = "import shutil, sys; shutil.copytree(sys.argv[1], sys.argv[2])"
    built: list[str] = []

    def fake_export(model: str, folder: Path, args: list[str]) -> list[str]:
        built.append(folder.name)
        return [sys.executable, "-c", copy, str(swept / "int8-rows"), str(folder)]

    monkeypatch.setattr(sweep, "export_command", fake_export)
    grid = [Variant("a", ()), Variant("none", ()), Variant("b", ())]
    result = run_sweep(str(tiny_llama), out, grid, measure=lambda _f: None, log=lambda _m: None)
    assert built == ["a", "b"] and result.built == ["a", "b"] and result.skipped == ["none"]


def test_a_failing_variant_does_not_stop_the_sweep(tiny_llama: Path, swept: Path) -> None:
    bad = Variant("bad-rank", ("--method", "svd", "--rank", "0"))
    result = run_sweep(str(tiny_llama), swept, [bad, Variant("none", ())], log=lambda _m: None)
    assert "--rank must be >= 1" in result.failed["bad-rank"]
    assert result.skipped == ["none"] and not (swept / "bad-rank").exists()


# ---------------------------------------------------------------------------- bad input


def test_another_model_in_the_same_out_is_refused(swept: Path) -> None:
    with pytest.raises(ValueError, match="use another --out"):
        run_sweep("some-other-model", swept, [Variant("none", ())], log=lambda _m: None)


def test_bad_arguments_exit_2(tmp_path: Path, text_file: Path) -> None:
    out = str(tmp_path / "out")
    assert main(["sweep", "m", "--out", out]) == 2  # no --text, no --sizes-only
    assert main(["sweep", "m", "--out", out, "--sizes-only", "--text", str(text_file)]) == 2
    assert main(["sweep", "m", "--out", out, "--text", str(tmp_path / "missing.txt")]) == 2
    assert main(["sweep", "m", "--out", out, "--text", str(text_file), "--only", "tt-r3"]) == 2
    assert not (tmp_path / "out").exists()
