"""Per-family export fixtures: each tests/models/test_<family>.py holds one test class (a
tests/models/family_checks.py FamilyChecks) whose FAMILY and METHODS these fixtures read.

One tiny checkpoint per family (tests/conftest.py's FAMILIES), exported once per test class with
each method it asks for; every export runs the exporter's own parity check against PyTorch.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tensorgpt.export.compress import CompressionSpec
from tensorgpt.export.exporter import export_model
from tests.conftest import _training_text, family_checkpoint

# method name -> (compression spec without the calibration text, --quantize)
METHODS: dict[str, tuple[CompressionSpec, str]] = {
    "none": (CompressionSpec(), "none"),
    "tt": (CompressionSpec(method="tt", rank=4), "none"),
    "int8-rows": (CompressionSpec(method="int8-rows"), "none"),
    "tc+q4": (CompressionSpec(method="tc"), "q4"),
}


@pytest.fixture(scope="session")
def calib_text(tmp_path_factory) -> Path:
    """Calibration text for tc: wikitext-2 *valid* lines (never an evaluation text)."""
    path = tmp_path_factory.mktemp("calib") / "calib.txt"
    path.write_text("\n".join(_training_text()[:400]), encoding="utf-8")
    return path


def spec_for(method: str, calib_text: Path) -> tuple[CompressionSpec, str]:
    spec, quantize = METHODS[method]
    if spec.method == "tc":
        spec = CompressionSpec(method="tc", calib_text=str(calib_text))
    return spec, quantize


@pytest.fixture(scope="class")
def checkpoint(request, tmp_path_factory) -> Path:
    return family_checkpoint(tmp_path_factory, request.cls.FAMILY)


@pytest.fixture(scope="class")
def exports(request, checkpoint, calib_text, tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    """{method: (folder, manifest)} for the test class's METHODS."""
    root = tmp_path_factory.mktemp(f"exports-{request.cls.FAMILY}")
    built, bodies = {}, {}
    for method in request.cls.METHODS:
        spec, quantize = spec_for(method, calib_text)
        out = root / method
        built[method] = (
            out,
            export_model(
                str(checkpoint), out, spec, quantize, log=lambda _: None, body_cache=bodies
            ),
        )
    return built
