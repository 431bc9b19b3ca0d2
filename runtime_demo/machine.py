"""The machine a timing ran on: cores, load, and how many threads to give onnxruntime.

On a shared machine a timing says as much about the other work as about the model: the same
decode step measured 68.8 ms with one thread and 147.5 ms with onnxruntime's default (one
thread per core) at a 1-minute load average of 6 on 2 cores. onnxruntime's threads spin while
they wait for each other, so a thread that shares its core with other work stalls all of them.
So every timing table says the core count and the load, and warns when the machine is busy;
and the CLI's default thread count leaves the cores that other work is using alone.

Standard library only (this runs on the device).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

# Busy: the other work's 1-minute load average is at least half the cores we may run on. From
# there on, a core our threads need is often taken, and timings are noticeably slower.
BUSY_LOAD_PER_CORE = 0.5


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity: containers, taskset), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def load_average() -> float | None:
    """The 1-minute load average (runnable processes, averaged); None where unknown."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):  # not on Windows
        return None


@dataclass(frozen=True)
class Machine:
    cores: int
    load_1min: float | None

    @property
    def busy(self) -> bool:
        return self.load_1min is not None and self.load_1min >= BUSY_LOAD_PER_CORE * self.cores

    def describe(self) -> str:
        """One line for a timing table: cores, load, and a warning when busy."""
        load = "unknown" if self.load_1min is None else f"{self.load_1min:.2f}"
        line = f"machine: {self.cores} cores, 1-min load average {load}"
        if self.busy:
            line += (
                " -- busy: other work is running, so these times are slower than on an idle "
                "machine; compare ratios measured in the same run, not absolute times"
            )
        return line


def machine() -> Machine:
    return Machine(usable_cores(), load_average())


def auto_threads(m: Machine) -> int:
    """Rule: one thread per core that the other work leaves free, at least one.

    free = cores - load (rounded): idle 2 cores -> 2 threads, load 1 -> 1, load 6 -> 1.
    Decided once, when a command starts, before its own work raises the load.
    """
    if m.load_1min is None:
        return m.cores
    return max(1, min(m.cores, round(m.cores - m.load_1min)))


@lru_cache(maxsize=1)
def _startup_machine() -> Machine:
    return machine()


def resolve_threads(threads: int | None) -> int:
    """`--threads` as given, or the rule's choice (auto_threads on the load at startup)."""
    if threads is not None:
        if threads < 0:
            raise ValueError(f"--threads must be >= 0 (0 = onnxruntime's default), got {threads}")
        return threads
    return auto_threads(_startup_machine())


def threads_note(given: int | None) -> str | None:
    """One line saying which thread count the default chose and why; None if --threads was
    given. Printed once the command's input is known to be good (bad input: one line only)."""
    if given is not None:
        return None
    m = _startup_machine()
    load = "unknown" if m.load_1min is None else f"{m.load_1min:.2f}"
    return (
        f"threads: {auto_threads(m)} (default: {m.cores} cores minus the 1-min load average "
        f"{load}, at least 1; --threads N to override)"
    )


def threads_label(threads: int | None) -> str:
    """How a timing's thread count reads in a table: 0/None is onnxruntime's own default."""
    if not threads:
        return f"onnxruntime default ({usable_cores()})"
    return str(threads)
