"""Open an exported folder's manifest (the contract: common/contract.py).

The manifest is what tells a tensorgpt export from any other ONNX file: without it we do not
know the layer count, the KV head shapes or the EOS ids, so a folder without one is refused.
"""

from __future__ import annotations

from pathlib import Path

from tensorgpt.common.contract import Manifest, ModelConfig, check_folder

__all__ = ["check_folder", "load_manifest"]


def load_manifest(folder: str | Path) -> tuple[Manifest, ModelConfig]:
    """Load and check `folder/manifest.json`: the typed manifest and its `config`."""
    manifest = Manifest.read(folder)
    return manifest, manifest.config
