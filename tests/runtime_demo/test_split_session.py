"""ExportedModel over a split export (decode.onnx + body.onnx): same logits, safe fallbacks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tensorgpt.runtime_demo.session import ExportedModel

IDS = np.array([[3, 17, 42, 5, 9, 11]], dtype=np.int64)


@pytest.fixture(scope="module")
def split_folder(tiny_llama, tmp_path_factory) -> Path:
    """tiny Llama with q4 weights, split written (no size threshold)."""
    pytest.importorskip("torch")
    from tensorgpt.export import split_load
    from tensorgpt.export.exporter import export_model

    folder = tmp_path_factory.mktemp("split-session") / "q4"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(split_load, "MIN_FRONTIER_BYTES", 0)
        manifest = export_model(str(tiny_llama), folder, quantize="q4", log=lambda _: None)
    assert manifest["split_load"] is not None
    return folder


def _logits(model: ExportedModel) -> np.ndarray:
    past = model.empty_past(1)
    mask = np.ones_like(IDS)
    positions = np.arange(IDS.shape[1])[None]
    logits, past = model.forward(IDS, mask, positions, past)
    step, _ = model.forward(
        np.array([[7]]), np.ones((1, IDS.shape[1] + 1), np.int64), np.array([[IDS.shape[1]]]), past
    )
    return np.concatenate([logits, step], axis=1)


def test_split_load_gives_the_same_logits(split_folder):
    split = ExportedModel(split_folder)
    whole = ExportedModel(split_folder, split=False)
    assert (split.load_mode, whole.load_mode) == ("split", "whole")
    np.testing.assert_allclose(_logits(split), _logits(whole), rtol=0, atol=1e-6)


def _copy(folder: Path, tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(folder, out)
    return out


def test_missing_split_file_falls_back_to_model_onnx(split_folder, tmp_path):
    folder = _copy(split_folder, tmp_path)
    (folder / "decode.onnx").unlink()
    assert ExportedModel(folder).load_mode == "whole"


def test_split_files_of_another_model_onnx_are_ignored(split_folder, tmp_path):
    """decode.onnx points into model.onnx by byte offset: after model.onnx changes, the split
    files must not be used (they would read the wrong bytes)."""
    folder = _copy(split_folder, tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["split_load"]["model_sha256"] = "0" * 64
    (folder / "manifest.json").write_text(json.dumps(manifest))
    model = ExportedModel(folder)
    assert model.load_mode == "whole"
    np.testing.assert_allclose(
        _logits(model), _logits(ExportedModel(split_folder)), rtol=0, atol=1e-6
    )


def test_corrupt_split_file_is_a_one_line_error(split_folder, tmp_path):
    folder = _copy(split_folder, tmp_path)
    body = folder / "body.onnx"
    body.write_bytes(body.read_bytes()[:100])
    with pytest.raises(ValueError, match="body.onnx has 100 bytes") as info:
        ExportedModel(folder)  # the integrity check names it before onnxruntime reads it
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="cannot load .*body.onnx") as info:
        ExportedModel(folder, check_integrity=False)
    assert "\n" not in str(info.value)
