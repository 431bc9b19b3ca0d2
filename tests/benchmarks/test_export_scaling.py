"""benchmarks/export_scaling.py's measured export: a failing export reports its own message."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from export_scaling import export_error, run_export  # noqa: E402


def test_failed_export_reports_the_exporters_line(tmp_path):
    (tmp_path / "ckpt").mkdir()  # no config.json: the exporter refuses with one line
    row = run_export(tmp_path / "ckpt", tmp_path / "out", [])
    assert row["exit"] == 2
    assert row["error"].startswith("tensorgpt export: error:"), row["error"]
    assert "config.json" in row["error"] or "ckpt" in row["error"], row["error"]
    assert row["peak_rss_gb"] is not None  # /usr/bin/time's report still read, from its file


def test_error_falls_back_to_the_last_line_then_the_signal():
    traceback = "Traceback (most recent call last):\n  File x\nRuntimeError: boom\n"
    assert export_error(traceback, "") == "RuntimeError: boom"
    timing = "\tCommand being timed: tensorgpt\nCommand terminated by signal 9\n"
    assert export_error("", timing) == "Command terminated by signal 9"
