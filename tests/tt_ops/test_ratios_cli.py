"""The paper's ratio table, the CLI commands, and every bad input (ValueError / exit code 2)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from tensorgpt.cli import EXIT_USER_ERROR, main
from tensorgpt.tt_ops.per_token import PerTokenTT, decompose_per_token
from tensorgpt.tt_ops.ratios import paper_ranks, paper_ratios
from tensorgpt.tt_ops.storage import load_compressed
from tensorgpt.tt_ops.tt_matrix import decompose_tt_matrix

PAPER = [(1, 20, 38.40), (2, 72, 10.67), (4, 232, 3.31), (8, 680, 1.13)]


def test_paper_table_for_768():
    rows = paper_ratios(768, [1, 2, 4, 8])
    assert [(r["rank"], r["params_per_token"], round(r["ratio"], 2)) for r in rows] == PAPER
    assert paper_ranks(768, 4) == [1, 2, 4, 4, 4, 4, 4, 4, 4, 2, 1]
    assert paper_ranks(768, 8) == [1, 2, 4, 8, 8, 8, 8, 8, 4, 2, 1]


def test_paper_params_match_a_real_decomposition():
    table = np.random.default_rng(0).normal(size=(3, 768))
    for rank, params, _ in PAPER:
        assert decompose_per_token(table, rank=rank).num_params() == 3 * params


def test_cli_ratios_json(capsys):
    assert main(["ratios", "--dim", "768", "--ranks", "1,2,4,8", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [set(r) for r in rows] == [{"rank", "params_per_token", "ratio"}] * 4
    assert [(r["rank"], r["params_per_token"], round(r["ratio"], 2)) for r in rows] == PAPER


def test_cli_ratios_table(capsys):
    assert main(["ratios", "--dim", "768", "--ranks", "4"]) == 0
    out = capsys.readouterr().out
    assert "232" in out and "3.31" in out and "1,2,4,4,4,4,4,4,4,2,1" in out


def test_cli_decompose_writes_a_loadable_file(tmp_path, capsys):
    table = np.random.default_rng(1).normal(size=(30, 48)).astype(np.float32)
    np.save(tmp_path / "t.npy", table)
    out = tmp_path / "c.safetensors"
    assert main(["decompose", str(tmp_path / "t.npy"), str(out), "--rank", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    tt = load_compressed(out)
    assert isinstance(tt, PerTokenTT) and max(tt.ranks) == 2
    err = np.linalg.norm(tt.reconstruct() - table) / np.linalg.norm(table)
    assert report["rel_fro"] == pytest.approx(err, rel=1e-5)
    assert report["params"] == tt.num_params() and report["ratio"] == pytest.approx(
        30 * 48 / tt.num_params()
    )
    args = ["--method", "tt-matrix", "--factors", "4,3,4", "--vocab-factors", "2,3,5"]
    assert main(["decompose", str(tmp_path / "t.npy"), str(out), *args]) == 0
    assert "rel_fro" in capsys.readouterr().out
    assert load_compressed(out).vocab_factors == (2, 3, 5)


def test_commands_module_imports_nothing_heavy():
    code = "import sys, tensorgpt.tt_ops.commands; print(sorted({'numpy', 'tensorly', 'safetensors', 'torch'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------- bad input


GOOD = np.random.default_rng(2).normal(size=(6, 16))


def with_value(value):
    bad = GOOD.copy()
    bad[2, 3] = value
    return bad


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rank": 0}, "rank must be >= 1"),
        ({"rank": -3}, "rank must be >= 1"),
        ({"rank": 2.5}, "rank must be an integer"),
        ({"rank": [2, 0, 2]}, r"rank\[1\] must be >= 1"),
        ({"rank": [2, 2]}, "rank must have 3 entries"),
        ({"rank": [2, 2, 2, 2, 2]}, "must start and end with 1"),
        ({"table": GOOD[0]}, "table must be 2-D"),
        ({"table": GOOD[None]}, "table must be 2-D"),
        ({"table": np.ones((0, 16))}, "at least one row"),
        ({"table": with_value(np.nan)}, "NaN or Inf"),
        ({"table": with_value(np.inf)}, "NaN or Inf"),
        ({"table": GOOD.astype(np.int64)}, "floating dtype"),
        ({"table": GOOD.astype(np.complex128)}, "floating dtype"),
        ({"mode_sizes": (3, 5)}, "smaller than the dimension 16"),
        ({"mode_sizes": (4, 0, 4)}, r"mode_sizes\[1\] must be >= 1"),
        ({"mode_sizes": ()}, "mode_sizes must not be empty"),
        ({"mode_sizes": 16}, "mode_sizes must be a list"),
        ({"rel_error": -0.1}, "rel_error must be a finite number >= 0"),
        ({"rel_error": float("nan")}, "rel_error must be a finite number"),
        ({"rank_mode": "rows", "rel_error": 0.1}, "rank_mode must be one of"),
        ({"method": "svd"}, "method must be one of"),
        ({"method": "tensorly", "rel_error": 0.1}, "fixed ranks only"),
    ],
)
def test_per_token_bad_input(kwargs, match):
    kwargs = {"table": GOOD, "mode_sizes": (2, 2, 2, 2), **kwargs}
    with pytest.raises(ValueError, match=match):
        decompose_per_token(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dim_factors": (4, 5)}, r"dim_factors \[4, 5\] multiply to 20, expected exactly 16"),
        ({"dim_factors": (4, 2)}, "multiply to 8, expected exactly 16"),
        ({"vocab_factors": (2, 2)}, "vocab_factors .* smaller than the dimension 6"),
        ({"vocab_factors": (2, 3, 1), "dim_factors": (4, 4)}, "must have the same length"),
        ({"rank": 0}, "rank must be >= 1"),
        ({"table": with_value(np.nan)}, "NaN or Inf"),
        ({"table": GOOD.astype(np.int32)}, "floating dtype"),
    ],
)
def test_tt_matrix_bad_input(kwargs, match):
    kwargs = {"table": GOOD, **kwargs}
    with pytest.raises(ValueError, match=match):
        decompose_tt_matrix(**kwargs)


def test_reconstruct_rejects_bad_rows():
    tt = decompose_per_token(GOOD, rank=2)
    for rows, match in [([6], r"rows must be in \[0, 6\)"), ([[0]], "1-D"), ([0.5], "integers")]:
        with pytest.raises(ValueError, match=match):
            tt.reconstruct(rows)


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["ratios", "--ranks", "0"], r"ranks\[0\] must be >= 1"),
        (["ratios", "--ranks", "a,b"], "--ranks must be comma-separated integers"),
        (["ratios", "--dim", "0"], "dim must be >= 1"),
        (["ratios", "--ranks", ","], "--ranks must list at least one integer"),
        (["decompose", "{nan}", "{out}"], "NaN or Inf"),
        (["decompose", "{int}", "{out}"], "floating dtype"),
        (["decompose", "{good}", "{out}", "--rank", "0"], "rank must be >= 1"),
        (["decompose", "{good}", "{out}", "--factors", "3,5"], "smaller than the dimension 16"),
        (["decompose", "{good}", "{out}", "--rel-error", "-1"], "rel_error must be a finite"),
        (["decompose", "{good}", "{out}", "--vocab-factors", "2,3"], "--vocab-factors applies"),
        (["decompose", "{missing}", "{out}"], "No such file"),
        (["decompose", "{txt}", "{out}"], "table must be a .npy or .safetensors file"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys, argv, match):
    np.save(tmp_path / "nan.npy", with_value(np.nan))
    np.save(tmp_path / "int.npy", GOOD.astype(np.int64))
    np.save(tmp_path / "good.npy", GOOD)
    (tmp_path / "t.txt").write_text("1 2 3")
    names = {
        "nan": tmp_path / "nan.npy",
        "int": tmp_path / "int.npy",
        "good": tmp_path / "good.npy",
        "missing": tmp_path / "missing.npy",
        "txt": tmp_path / "t.txt",
        "out": tmp_path / "out.safetensors",
    }
    argv = [a.format(**{k: str(v) for k, v in names.items()}) for a in argv]
    assert main(argv) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"tensorgpt {argv[0]}: error:")
    assert re.search(match, err), err
    assert not (tmp_path / "out.safetensors").exists()
