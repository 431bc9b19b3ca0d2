"""benchmarks/saten_quality.py end to end on a tiny checkpoint: a variant is exported with
linear_factors.py's parsing (its spec tuple) and scored by the PyTorch twin, and a rerun
reuses the row instead of exporting again."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import saten_quality  # noqa: E402


def test_exports_scores_and_reuses_a_factored_variant(tiny_llama, tmp_path, monkeypatch, capsys):
    domains = tmp_path / "domains"
    domains.mkdir()
    (domains / "words.txt").write_text(" ".join(["the cat sat on a mat"] * 60))
    argv = ["saten_quality.py", "--out", str(tmp_path / "out"), "--domains", str(domains)]
    argv += ["--model", str(tiny_llama), "--max-tokens", "128", "--variants", "svd-0.9-q4"]
    monkeypatch.setattr(sys, "argv", argv)
    assert saten_quality.main() == 0
    row = json.loads((tmp_path / "out" / "svd-0.9-q4" / "saten_quality.json").read_text())
    assert row["passed"] and 0.8 < row["stored_ratio"] <= 0.9
    assert row["perplexity"]["words"] > 1.0
    table = capsys.readouterr().out
    assert "| svd-0.9-q4 |" in table
    assert saten_quality.main() == 0  # the row reused: no second export
    assert "reusing" in capsys.readouterr().err
