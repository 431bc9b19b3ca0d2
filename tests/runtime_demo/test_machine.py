"""runtime_demo/machine.py: the default thread rule and the busy warning."""

from __future__ import annotations

import pytest

from tensorgpt.runtime_demo.machine import Machine, auto_threads, resolve_threads, threads_note


@pytest.mark.parametrize(
    ("cores", "load", "threads"),
    [(2, 0.1, 2), (2, 0.6, 1), (2, 1.0, 1), (2, 6.0, 1), (8, 2.2, 6), (8, None, 8), (1, 0.0, 1)],
)
def test_threads_left_free_by_other_work(cores, load, threads):
    assert auto_threads(Machine(cores, load)) == threads


def test_busy_warning_from_half_the_cores():
    assert "busy" not in Machine(4, 1.9).describe()
    busy = Machine(4, 2.0).describe()
    assert busy.startswith("machine: 4 cores, 1-min load average 2.00") and "busy" in busy
    assert "unknown" in Machine(2, None).describe()


def test_explicit_threads_win_and_are_not_announced():
    assert resolve_threads(3) == 3 and threads_note(3) is None
    assert resolve_threads(0) == 0  # onnxruntime's own default
    with pytest.raises(ValueError, match="--threads must be >= 0"):
        resolve_threads(-1)
    chosen = resolve_threads(None)
    assert chosen >= 1 and threads_note(None).startswith(f"threads: {chosen} (default:")
