"""Write a whole output folder or nothing: build it beside the target, then rename."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def check_target(out_dir: Path, force: bool) -> None:
    """Fail early, before any expensive work, on a target we must not or cannot write."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"OUT_DIR {out_dir} exists and is not a folder")
    if out_dir.exists() and any(out_dir.iterdir()) and not force:
        raise ValueError(f"OUT_DIR {out_dir} already exists; pass --force to replace it")
    parent = out_dir.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)  # like `mkdir -p`: out/smollm2 just works
    except OSError as exc:
        raise ValueError(
            f"cannot create the parent folder of OUT_DIR {parent}: {exc.strerror}"
        ) from None
    if not os.access(parent, os.W_OK):
        raise ValueError(f"no write permission in {parent}")


@contextlib.contextmanager
def staged_folder(out_dir: Path) -> Iterator[Path]:
    """Yield a temporary folder next to `out_dir`; on success it replaces `out_dir`.

    On any exception the temporary folder is removed and `out_dir` is left as it was.
    The temporary folder lives in the same parent so the final rename stays on one filesystem.
    """
    out_dir = out_dir.resolve()
    stage = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(stage, 0o777 & ~umask)  # mkdtemp makes 0700; the result should look like mkdir's
    try:
        yield stage
        backup = None
        if out_dir.exists():
            backup = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            os.replace(out_dir, backup)
        os.replace(stage, out_dir)
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
