"""Write a whole output folder or nothing: build it beside the target, then rename.

    OUT_DIR/..                 the parent: everything below lives in it (one filesystem)
      .OUT.lock                held (flock) by the export writing OUT_DIR, removed after
      .OUT.tmp-PID-XXXX/       the folder being built, marked by a `.tensorgpt-staging` file
      .OUT.old-PID/            the previous OUT_DIR for the instant of the swap

A killed export (SIGKILL, power loss, a full disk while removing) leaves its `.tmp-`/`.old-`
folder behind; the next export into the same parent removes those whose process is gone
(`remove_stale`). Only folders we can tell are ours are removed: a staging folder carries
the marker file, a backup is a tensorgpt export.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from tensorgpt.export.target import is_export

STAGING_MARKER = ".tensorgpt-staging"
_LEFTOVER = re.compile(r"\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)(?:-.*)?")

try:  # POSIX: a lock is released by the kernel when its holder dies, even on SIGKILL
    import fcntl
except ImportError:  # pragma: no cover - Windows: no lock, as before
    fcntl = None  # type: ignore[assignment]


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    except OSError:  # no os.kill semantics here: never remove what might be in use
        return True
    return True


def remove_stale(parent: Path, log: Callable[[str], None]) -> list[Path]:
    """Remove `.NAME.tmp-PID-*` and `.NAME.old-PID` folders of exports that are no longer
    running (PID gone) from `parent`; returns what was removed."""
    removed = []
    for entry in sorted(parent.iterdir()):
        match = _LEFTOVER.fullmatch(entry.name)
        if not match or entry.is_symlink() or not entry.is_dir():
            continue
        if _alive(int(match["pid"])):
            continue
        ours = (
            (entry / STAGING_MARKER).is_file()
            if match["kind"] == "tmp"
            else (is_export(entry) or not any(entry.iterdir()))
        )
        if not ours:
            continue
        shutil.rmtree(entry, ignore_errors=True)
        if not entry.exists():
            removed.append(entry)
            log(f"removed {entry.name}, left in {parent} by an export that was killed")
    return removed


@contextlib.contextmanager
def out_dir_lock(out_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on OUT_DIR for the whole export; a second export of the same
    OUT_DIR fails at once (ValueError) instead of racing the first to the rename."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    lock_path = out_dir.parent / f".{out_dir.name}.lock"
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ValueError(
                f"OUT_DIR {out_dir} is being written by another export (pid {holder}); "
                "wait for it to finish or pick another folder"
            ) from None
        # The previous holder unlinks the file when done: make sure ours is still the file.
        try:
            current = os.stat(lock_path).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(fd).st_ino:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            lock_path.unlink()
        os.close(fd)


@contextlib.contextmanager
def _interrupt_noted() -> Iterator[list[int]]:
    """Note every Ctrl-C as well as raising it: a KeyboardInterrupt raised inside a finalizer
    that gc.collect() runs is printed and dropped by Python, and the export would finish and
    exit 0. The note lets `staged_folder` refuse to publish an interrupted export."""
    noted: list[int] = []
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # a background job: keep it so
    ):
        yield noted
        return

    def handler(signum, frame):
        noted.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield noted
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def staged_folder(out_dir: Path) -> Iterator[Path]:
    """Yield a temporary folder next to `out_dir`; on success it replaces `out_dir`.

    On any exception (or a Ctrl-C that Python swallowed) the temporary folder is removed and
    `out_dir` is left as it was. The temporary folder lives in the same parent so the final
    rename stays on one filesystem.
    """
    out_dir = out_dir.resolve()
    stage = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-{os.getpid()}-", dir=out_dir.parent))
    (stage / STAGING_MARKER).touch()
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(stage, 0o777 & ~umask)  # mkdtemp makes 0700; the result should look like mkdir's
    try:
        with _interrupt_noted() as interrupts:
            yield stage
            if interrupts:
                raise KeyboardInterrupt("Ctrl-C during the export; OUT_DIR left as it was")
        (stage / STAGING_MARKER).unlink()
        backup = None
        if out_dir.exists():
            backup = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            os.replace(out_dir, backup)
        os.replace(stage, out_dir)
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
            if backup.exists():
                print(
                    f"warning: could not remove the previous export, left at {backup} "
                    "(the next export into this folder removes it)",
                    file=sys.stderr,
                )
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
