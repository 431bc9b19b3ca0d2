"""Evaluation texts from several domains, built deterministically from files a machine has.

Quality of a compressed model is reported on texts never used for calibration, in several
domains, worst one first (issue 19). Each domain is a plain-text file written by `build`:

    wikitext2-test   wikitext-2 test split (the data folder given; CC BY-SA 3.0)
    python-source    the running interpreter's standard library: the top-level Lib/*.py
                     files in sorted order (code; changes with the Python version, which the
                     source line records)
    licenses         Debian's /usr/share/common-licenses (package base-files: legal English),
                     regular files only (symlinks such as GPL -> GPL-3 skipped), sorted
    fortunes         Debian package `fortunes` (/usr/share/games/fortunes): quotations, jokes,
                     literature; the `%` separators dropped; a fixed list of files

A domain whose source is missing is skipped with a one-line reason (for example "apt-get
install fortunes"); `scripts/install.sh` installs the Debian package where apt is available.
No torch here: `tensorgpt compare` (runtime side) uses these files too.

    python -m tensorgpt.domain_texts OUT_DIR [--wikitext DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

# Enough characters for 8192 tokens of any of these domains (code packs ~3 chars/token).
MAX_CHARS = 400_000
FORTUNE_DIR = Path("/usr/share/games/fortunes")
# Prose-like fortune files (no ASCII art, no non-English "translate-me"), in this order.
FORTUNE_FILES = (
    "fortunes",
    "literature",
    "people",
    "wisdom",
    "science",
    "humorists",
    "education",
    "work",
    "politics",
    "pets",
    "food",
    "love",
    "miscellaneous",
)
LICENSE_DIR = Path("/usr/share/common-licenses")
# The folder holding wikitext-2 valid.txt/test.txt: TENSORGPT_DATA (as scripts/main_job.sh), else
# ../shared/data/wikitext-2 beside the repo.
DEFAULT_WIKITEXT = os.environ.get(
    "TENSORGPT_DATA",
    str(Path(__file__).resolve().parents[1].parent / "shared" / "data" / "wikitext-2"),
)


@dataclass(frozen=True)
class DomainText:
    name: str
    text: str | None  # None: the source is missing on this machine
    source: str  # where it comes from, or why it is missing


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def _cap(parts: list[str]) -> str:
    out, size = [], 0
    for p in parts:
        out.append(p)
        size += len(p) + 1
        if size >= MAX_CHARS:
            break
    return "\n".join(out)[:MAX_CHARS]


def wikitext_test(data_dir: str | Path = DEFAULT_WIKITEXT) -> DomainText:
    path = Path(data_dir) / "test.txt"
    if not path.is_file():
        return DomainText("wikitext2-test", None, f"missing {path} (wikitext-2 test split)")
    return DomainText("wikitext2-test", _read(path)[:MAX_CHARS], str(path))


def python_source() -> DomainText:
    lib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in lib.glob("*.py") if p.is_file())
    if not files:
        return DomainText("python-source", None, f"no *.py files in {lib}")
    v = sys.version_info
    src = f"{lib}/*.py, sorted (Python {v.major}.{v.minor}.{v.micro})"
    return DomainText("python-source", _cap([_read(p) for p in files]), src)


def licenses() -> DomainText:
    files = sorted(p for p in LICENSE_DIR.glob("*") if p.is_file() and not p.is_symlink())
    if not files:
        return DomainText("licenses", None, f"missing {LICENSE_DIR} (Debian package base-files)")
    return DomainText("licenses", _cap([_read(p) for p in files]), f"{LICENSE_DIR}/*, sorted")


def fortunes() -> DomainText:
    files = [FORTUNE_DIR / f for f in FORTUNE_FILES if (FORTUNE_DIR / f).is_file()]
    if not files:
        return DomainText("fortunes", None, f"missing {FORTUNE_DIR} (apt-get install fortunes)")
    parts = []
    for p in files:
        lines = [ln for ln in _read(p).splitlines() if ln.strip() != "%"]
        parts.append("\n".join(lines))
    names = ",".join(p.name for p in files)
    return DomainText("fortunes", _cap(parts), f"{FORTUNE_DIR}/{{{names}}}, '%' lines dropped")


def domains(data_dir: str | Path = DEFAULT_WIKITEXT) -> list[DomainText]:
    """Every evaluation domain, in a fixed order (missing ones have text None)."""
    return [wikitext_test(data_dir), python_source(), licenses(), fortunes()]


def build(out_dir: str | Path, data_dir: str | Path = DEFAULT_WIKITEXT) -> list[DomainText]:
    """Write <out_dir>/<name>.txt per available domain plus SOURCES.txt; returns all domains."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = domains(data_dir)
    lines = []
    for d in result:
        if d.text is None:
            lines.append(f"{d.name}: skipped, {d.source}")
            continue
        (out / f"{d.name}.txt").write_text(d.text, encoding="utf-8")
        lines.append(f"{d.name}: {len(d.text)} chars from {d.source}")
    (out / "SOURCES.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="write the evaluation texts of every domain")
    ap.add_argument("out_dir")
    ap.add_argument("--wikitext", default=DEFAULT_WIKITEXT, help="folder with test.txt")
    args = ap.parse_args(argv)
    for d in build(args.out_dir, args.wikitext):
        status = "skipped, " if d.text is None else f"{len(d.text)} chars from "
        print(f"{d.name}: {status}{d.source}", file=sys.stderr if d.text is None else sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
