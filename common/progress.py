"""Progress of every step that takes more than a few seconds, with an estimate of the time left.

On a terminal a loop shows a tqdm bar (elapsed, rate and time left on one redrawn line). In a
log (stderr redirected to a file, CI, `scripts/main_job.sh > log`) redrawn bars become noise,
so a loop prints one line when it starts, one at most every `LINE_INTERVAL_S` seconds with the
time left, and one when it ends. A step that cannot be counted (one library call, such as
torch.onnx's export) prints a line when it starts and one with its duration when it ends.

Only the standard library and tqdm (a base dependency): the runtime uses this on a device too.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sized
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")
Log = Callable[[str], None]

# In a log, a long loop says how far it is at most this often (a line per stage otherwise).
LINE_INTERVAL_S = 30.0
# A step that took less than this gets no "done in" line: its start line is enough.
QUIET_BELOW_S = 2.0


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def on_terminal() -> bool:
    """True when stderr is a terminal, where a redrawn tqdm bar is readable."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def duration(seconds: float) -> str:
    """42 s, 3 min 05 s, 1 h 02 min: precise enough to plan around, short enough to scan."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def track(
    items: Iterable[T],
    desc: str,
    unit: str = "step",
    total: int | None = None,
    log: Log | None = None,
    terminal: bool | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[T]:
    """Yield `items`, showing how far the loop is and about how long it has left.

    The estimate assumes the remaining items take as long as the finished ones on average.
    terminal=None asks stderr; `log` (default: stderr) receives the lines when not on a
    terminal.
    """
    log = log or _stderr
    if total is None and isinstance(items, Sized):
        total = len(items)
    if on_terminal() if terminal is None else terminal:
        from tqdm import tqdm

        yield from tqdm(items, desc=desc, unit=unit, total=total, file=sys.stderr, leave=False)
        return
    start = last = clock()
    log(f"{desc}: {total if total is not None else 'some'} {unit}s ...")
    done = 0
    for item in items:
        yield item
        done += 1
        now = clock()
        if now - last >= LINE_INTERVAL_S and (total is None or done < total):
            last = now
            left = (
                ""
                if total is None
                else f", about {duration((now - start) / done * (total - done))} left"
            )
            of = f"/{total}" if total is not None else ""
            log(f"{desc}: {done}{of} {unit}s, {duration(now - start)} elapsed{left}")
    log(f"{desc}: {done} {unit}s done in {duration(clock() - start)}")


@contextmanager
def stage(desc: str, log: Log | None = None, clock: Callable[[], float] = time.monotonic):
    """A step that cannot be counted: a line when it starts and, if it took more than
    QUIET_BELOW_S, one with its duration."""
    log = log or _stderr
    start = clock()
    log(f"{desc} ...")
    yield
    took = clock() - start
    if took >= QUIET_BELOW_S:
        log(f"{desc}: done in {duration(took)}")
