"""A wheel holds only the packages pyproject.toml lists: every source folder must be listed.

An editable install finds subpackages by itself, so a missing entry only shows when a user
installs from a wheel or `pip install .` (the methods would be missing and `--method` empty).
"""

from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]


def _config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"][
        "setuptools"
    ]


def _packages_on_disk(package_dir: dict[str, str]) -> set[str]:
    found = set()
    for package, folder in package_dir.items():
        if package.count(".") > 1:
            continue
        for init in (ROOT / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((package, *parts)))
    return found


def test_every_source_package_is_listed_for_the_wheel() -> None:
    config = _config()
    on_disk = _packages_on_disk(config["package-dir"])
    listed = set(config["packages"])
    assert on_disk - listed == set(), f"add to pyproject.toml packages: {sorted(on_disk - listed)}"
    assert listed - on_disk == set(), f"listed but not on disk: {sorted(listed - on_disk)}"
