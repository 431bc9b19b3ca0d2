"""common/ort_load.py `release_file_pages`: the export folder's mapped file pages leave RSS,
the data stays readable, and mappings outside the folder are left alone."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from tensorgpt.common.ort_load import release_file_pages

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")
MIB = 1 << 20


def _rss_file() -> float:
    with open("/proc/self/status") as status:
        line = next(x for x in status if x.startswith("RssFile:"))
    return int(line.split()[1]) / 1024


def test_mapped_pages_leave_rss_and_read_back(tmp_path: Path) -> None:
    inside, outside = tmp_path / "export", tmp_path / "other"
    inside.mkdir()
    outside.mkdir()
    data = np.random.default_rng(0).integers(0, 256, 16 * MIB, dtype=np.uint8)
    data.tofile(inside / "model.onnx")
    data.tofile(outside / "model.onnx")
    mapped = np.memmap(inside / "model.onnx", dtype=np.uint8, mode="r")
    other = np.memmap(outside / "model.onnx", dtype=np.uint8, mode="r")
    assert int(mapped.sum()) == int(other.sum()) == int(data.sum())  # every page touched
    before = _rss_file()
    advised = release_file_pages(inside)
    after = _rss_file()
    if advised == 0:
        pytest.skip("madvise(MADV_PAGEOUT) not available on this kernel")
    assert advised >= 16 * MIB
    assert before - after >= 12  # MiB: the inside mapping's pages left, not the other's
    assert before - after <= 20
    assert np.array_equal(mapped, data)  # faulted back in from the file, unchanged


def test_written_private_mapping_is_kept(tmp_path: Path) -> None:
    """A copy-on-write mapping that was written to holds data the file does not: kept."""
    folder = tmp_path / "export"
    folder.mkdir()
    np.zeros(4 * MIB, np.uint8).tofile(folder / "model.onnx")
    cow = np.memmap(folder / "model.onnx", dtype=np.uint8, mode="c")
    cow[:] = 7
    release_file_pages(folder)
    assert int(cow.min()) == int(cow.max()) == 7
