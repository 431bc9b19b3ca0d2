"""`tensorgpt verify OUT_DIR`: check an exported folder without running it.

Reads the manifest (its structure, file names and config, as every command does) and checks
each file a load reads against the size and sha256 the manifest records: what to run after
copying a folder to a board. Exit 0 only when every file was checked and matched.
"""

from __future__ import annotations

import argparse

from tensorgpt.common.command import Command


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", metavar="OUT_DIR", help="folder written by `tensorgpt export`")


def _run(args: argparse.Namespace) -> int:
    from .integrity import verify_folder
    from .manifest import check_folder, load_manifest

    folder = check_folder(args.out_dir)
    manifest, _config = load_manifest(folder)
    rows = verify_folder(folder, manifest)
    for name, status in rows:
        print(f"{name:20s} {status}")
    failed = [name for name, status in rows if status.startswith("FAILED")]
    unchecked = [name for name, status in rows if status.startswith("not recorded")]
    if failed:
        raise ValueError(
            f"{folder}: {len(failed)} of {len(rows)} files do not match the manifest "
            f"({', '.join(failed)}); copy them again or re-export"
        )
    if unchecked:
        raise ValueError(
            f"{folder}: the manifest records no hash for {', '.join(unchecked)} (exported by an "
            "older tensorgpt): cannot verify them; re-export to record them"
        )
    print(f"{folder}: all {len(rows)} files match the manifest")
    return 0


COMMANDS = [
    Command(
        "verify",
        "check an exported folder's files against its manifest's sizes and sha256 (no model run)",
        _add_arguments,
        _run,
    ),
]
