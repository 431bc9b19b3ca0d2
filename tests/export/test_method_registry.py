"""The `--method` registry finds every method whatever was imported first."""

from __future__ import annotations

import subprocess
import sys


def test_importing_one_method_first_still_finds_all():
    # a fresh interpreter: in this one the registry may already be filled
    code = (
        "import tensorgpt.export.methods.tc\n"
        "from tensorgpt.export.methods import method_names\n"
        "print(' '.join(method_names()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    names = set(out.stdout.split())
    assert {"none", "tt", "tc", "int8-rows", "svd"} <= names, out.stdout
