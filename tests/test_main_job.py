"""scripts/main_job.sh end to end on a tiny checkpoint: what a newcomer reads at the end.

The script's own steps (three exports, a run, a comparison) on the tiny Llama of
tests/conftest.py (512 positions, so the comparison's 512-token windows fit) and a slice of
wikitext-2; the printed table must explain its columns and end with which file to ship.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SHARED_DATA, build_checkpoint

pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[1]
FALLBACK = "The tower is 324 metres tall, about the same height as an 81-storey building.\n"


def _slice(name: str, lines: int) -> str:
    path = SHARED_DATA / name
    if path.is_file():
        return "\n".join(path.read_text(encoding="utf-8").splitlines()[:lines]) + "\n"
    return FALLBACK * lines  # shared/ missing: still runs


def test_main_job_prints_legend_conclusion_and_plot(tmp_path: Path) -> None:
    checkpoint = build_checkpoint(tmp_path / "ckpt", "llama", max_position_embeddings=512)
    data = tmp_path / "data"
    data.mkdir()
    (data / "valid.txt").write_text(_slice("valid.txt", 400), encoding="utf-8")
    (data / "test.txt").write_text(_slice("test.txt", 60), encoding="utf-8")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "TENSORGPT_MODEL": str(checkpoint),
        "TENSORGPT_DATA": str(data),
    }
    proc = subprocess.run(
        ["bash", "scripts/main_job.sh", str(tmp_path / "out")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out, err = proc.stdout, proc.stderr

    # run (after the three exports' summaries): the prompt echoed, then why it stopped
    assert re.search(r"^The capital of France is", out, re.M)
    assert re.search(r"stopped: (max new tokens \(24|end-of-sequence|the model's context)", err)

    # the table, then one legend line per column it shows
    header = next(line for line in out.splitlines() if line.startswith("variant "))
    columns = re.split(r"\s{2,}", header.strip())
    assert {"file MB", "folder MB", "file x", "emb x", "norm-MAE", "front"} <= set(columns)
    legend = out[out.index("Columns:") :]
    for column in columns:
        assert re.search(rf"^  {re.escape(column)}\s{{2,}}\S", legend, re.M), column
    assert re.search(r"^machine: \d+ cores, 1-min load average", out, re.M)
    conclusion = re.search(r"^Conclusion: ship `(none|tt-r4|tc2\.2\+q4)` \(.* MB", out, re.M)
    assert conclusion, out[-1500:]

    # the same 8192-token setting as the README, and the plot where the job says it is
    assert "first 8192 tokens" in legend
    plot = tmp_path / "out" / "main" / "compare.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(plot.resolve()) in err
