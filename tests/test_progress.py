"""common/progress.py: the lines a log gets (stderr not a terminal), on a fake clock."""

from __future__ import annotations

from tensorgpt.common.progress import LINE_INTERVAL_S, duration, stage, track


class FakeClock:
    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_log_lines_report_progress_and_time_left():
    lines: list[str] = []
    # Each item takes LINE_INTERVAL_S / 2: a progress line every second item.
    clock = FakeClock(LINE_INTERVAL_S / 2)
    items = list(
        track(range(6), "calibration", unit="window", log=lines.append, terminal=False, clock=clock)
    )
    assert items == list(range(6))
    assert lines[0] == "calibration: 6 windows ..."
    assert lines[1] == "calibration: 2/6 windows, 30 s elapsed, about 1 min 00 s left"
    assert lines[-1].startswith("calibration: 6 windows done in 1 min")
    assert not any("6/6" in line for line in lines)  # the end line says it, not a progress line


def test_stage_reports_duration_only_when_long():
    lines: list[str] = []
    with stage("exporting", log=lines.append, clock=FakeClock(75.0)):
        pass
    assert lines == ["exporting ...", "exporting: done in 1 min 15 s"]
    lines.clear()
    with stage("writing", log=lines.append, clock=FakeClock(0.1)):
        pass
    assert lines == ["writing ..."]


def test_duration_text():
    assert [duration(s) for s in (4.24, 42, 185, 3725)] == [
        "4.2 s",
        "42 s",
        "3 min 05 s",
        "1 h 02 min",
    ]
