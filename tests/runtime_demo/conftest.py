"""Fixtures for runtime_demo tests.

- `toy_dir`: a folder around a trivial graph (instant; contract IO only) for plumbing and
  bad-input tests.
- `exported`: the tiny GPT-2 / Llama checkpoints (tests/conftest.py, initialised sharp
  enough that greedy output varies) exported with the real exporter, for parity with PyTorch.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from toy_export import write_toy_export  # noqa: E402


@pytest.fixture(scope="session")
def toy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid exported folder around a trivial graph; tests must not modify it."""
    return write_toy_export(tmp_path_factory.mktemp("toy") / "export")


@dataclass(frozen=True)
class Exported:
    family: str
    checkpoint: Path  # HF folder PyTorch loads: the same weights as the export
    folder: Path  # tensorgpt export OUT_DIR


def _checkpoint(request: pytest.FixtureRequest, family: str) -> Path:
    return request.getfixturevalue(f"tiny_{family}")


def _export(request: pytest.FixtureRequest, family: str, method: str, **options: int) -> Exported:
    pytest.importorskip("torch")
    from tensorgpt.export.compress import CompressionSpec
    from tensorgpt.export.exporter import export_model

    checkpoint = _checkpoint(request, family)
    folder = request.getfixturevalue("tmp_path_factory").mktemp(f"{family}-{method}") / "export"
    spec = CompressionSpec(method=method, **options)
    export_model(str(checkpoint), folder, spec=spec, log=lambda _message: None)
    return Exported(family, checkpoint, folder)


@pytest.fixture(scope="session", params=["gpt2", "llama"])
def exported(request: pytest.FixtureRequest) -> Exported:
    """A tiny model exported with method none; read-only for tests."""
    return _export(request, request.param, "none")


@pytest.fixture(scope="session")
def exported_tt(request: pytest.FixtureRequest) -> Exported:
    """The tiny Llama with a per-token TT embedding (rank 4), tied head rebuilt from the cores."""
    return _export(request, "llama", "tt", rank=4)


@pytest.fixture(scope="session")
def torch_model(exported: Exported):
    """The PyTorch model the export corresponds to (eval mode, float32)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(exported.checkpoint), dtype=torch.float32)
    return model.eval()
