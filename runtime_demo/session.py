"""`ExportedModel`: one onnxruntime session over an exported folder, checked against the contract.

The graph's input and output names, dtypes and the fixed dimensions (KV heads, head size,
vocabulary) are compared with the manifest at load, so a mismatched folder fails with one
clear message instead of an onnxruntime shape error deep inside generation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from tensorgpt.common.contract import (
    ATTENTION_MASK,
    INPUT_IDS,
    LOGITS,
    MODEL_FILE,
    POSITION_IDS,
    ModelConfig,
    past_name,
    present_names,
)
from tensorgpt.common.ort_load import (
    open_split_session,
    release_file_pages,
    release_freed_memory,
    session_options,
)

from .graph_check import check_against_graph
from .integrity import plan_load
from .manifest import check_folder, load_manifest

# One (key, value) pair per layer, each float32 (batch, num_kv_heads, past_len, head_dim).
KVCache = list[tuple[np.ndarray, np.ndarray]]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class ExportedModel:
    """An exported folder (model.onnx + manifest.json + tokenizer.json) ready to run.

    `manifest` is the raw manifest dict, `config` its typed `config` section. When the export
    wrote decode.onnx and body.onnx beside model.onnx, they are loaded instead (same logits,
    about half the peak memory while loading; see `open_split_session`) unless `split=False`.
    `load_mode` says which: "split" or "whole".
    """

    def __init__(
        self,
        folder: str | Path,
        threads: int | None = None,
        split: bool = True,
        check_integrity: bool = True,
    ) -> None:
        self.folder = check_folder(folder)
        self.manifest, self.config = load_manifest(self.folder)
        self.model_path = self.folder / MODEL_FILE
        # Every file the load reads is checked against the manifest's hashes first
        # (runtime_demo/integrity.py); check_integrity=False loads a damaged copy anyway.
        plan = plan_load(self.folder, self.manifest, split, check_integrity)
        files = plan.split
        self.checked_files = plan.checked
        self.load_mode = "whole" if files is None else "split"
        options = session_options(threads)
        try:
            if files is None:
                self.session = ort.InferenceSession(
                    str(self.model_path), sess_options=options, providers=["CPUExecutionProvider"]
                )
            else:
                self.session = open_split_session(*files, options, threads)
        except Exception as exc:  # onnxruntime's load errors derive from Exception only
            what = self.model_path if files is None else f"{files[0]} + {files[1]}"
            raise ValueError(
                f"cannot load {what} (corrupt or truncated?): {_first_line(exc)}"
            ) from None
        release_freed_memory()
        release_file_pages(self.folder)
        # Manifest numbers are checked against the graph before anything is sized by them.
        check_against_graph(self.session, self.config, self.model_path)
        self._output_names = [LOGITS, *present_names(self.config.num_layers)]

    # Convenience views on the config, used by generation, perplexity and bench.
    @property
    def num_layers(self) -> int:
        return self.config.num_layers

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def max_positions(self) -> int:
        return self.config.max_position_embeddings

    def empty_past(self, batch: int) -> KVCache:
        """A zero-length cache: the first forward runs the whole prompt."""
        shape = (batch, self.config.num_kv_heads, 0, self.config.head_dim)
        return [
            (np.zeros(shape, np.float32), np.zeros(shape, np.float32))
            for _ in range(self.config.num_layers)
        ]

    def check_token_ids(self, ids: np.ndarray, what: str = "token id") -> None:
        """Out-of-range ids make Gather read garbage or crash: refuse them up front."""
        if ids.size and (ids.min() < 0 or ids.max() >= self.config.vocab_size):
            bad = int(ids.min()) if ids.min() < 0 else int(ids.max())
            raise ValueError(
                f"{what} {bad} is out of range for this model (vocab_size {self.config.vocab_size})"
            )

    def forward(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        position_ids: np.ndarray,
        past: KVCache,
    ) -> tuple[np.ndarray, KVCache]:
        """One graph call: logits (batch, seq, vocab) and the grown cache (past + seq)."""
        input_ids = np.ascontiguousarray(input_ids, dtype=np.int64)
        attention_mask = np.ascontiguousarray(attention_mask, dtype=np.int64)
        position_ids = np.ascontiguousarray(position_ids, dtype=np.int64)
        _check_shapes(input_ids, attention_mask, position_ids, past, self.config)
        self.check_token_ids(input_ids)
        feeds: dict[str, Any] = {
            INPUT_IDS: input_ids,
            ATTENTION_MASK: attention_mask,
            POSITION_IDS: position_ids,
        }
        for i, (key, value) in enumerate(past):
            feeds[past_name(i, "key")] = key
            feeds[past_name(i, "value")] = value
        try:
            outputs = self.session.run(self._output_names, feeds)
        except Exception as exc:  # onnxruntime's run errors: a graph that contradicts its folder
            raise ValueError(f"{self.model_path}: onnxruntime failed: {_first_line(exc)}") from None
        present = [(outputs[1 + 2 * i], outputs[2 + 2 * i]) for i in range(self.num_layers)]
        return outputs[0], present


def _check_shapes(
    input_ids: np.ndarray,
    attention_mask: np.ndarray,
    position_ids: np.ndarray,
    past: KVCache,
    config: ModelConfig,
) -> None:
    if input_ids.ndim != 2 or input_ids.shape[1] == 0:
        raise ValueError(f"input_ids must be (batch, seq) with seq >= 1, got {input_ids.shape}")
    batch, seq = input_ids.shape
    if len(past) != config.num_layers:
        raise ValueError(f"past has {len(past)} layers, the model has {config.num_layers}")
    past_len = past[0][0].shape[2]
    if any(k.shape[0] != batch or v.shape[0] != batch for k, v in past):
        raise ValueError(f"past batch size does not match input_ids batch {batch}")
    if attention_mask.shape != (batch, past_len + seq):
        raise ValueError(
            f"attention_mask must be {(batch, past_len + seq)} (batch, past + seq), "
            f"got {attention_mask.shape}"
        )
    if position_ids.shape != (batch, seq):
        raise ValueError(f"position_ids must be {(batch, seq)}, got {position_ids.shape}")
    if past_len + seq > config.max_position_embeddings:
        raise ValueError(
            f"{past_len + seq} positions exceed the model's context "
            f"(max_position_embeddings {config.max_position_embeddings})"
        )
