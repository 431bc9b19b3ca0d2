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

from .graph_check import check_against_graph, present_names
from .integrity import plan_load
from .manifest import ModelConfig, check_folder, load_manifest

# One (key, value) pair per layer, each float32 (batch, num_kv_heads, past_len, head_dim).
KVCache = list[tuple[np.ndarray, np.ndarray]]


def session_options(threads: int | None) -> ort.SessionOptions:
    """Options for a latency-oriented single-model session.

    ENABLE_ALL is kept on purpose: it constant-folds initializer-only subgraphs at load, which
    is how a TT-compressed tied head gets rebuilt once instead of on every forward.
    """
    if threads is not None and threads < 0:
        raise ValueError(f"--threads must be >= 0 (0 = onnxruntime's default), got {threads}")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or 0
    # A decoder is one chain of ops: parallel branches would only add scheduling threads.
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # warnings about unused initializers are noise to users
    return options


def release_freed_memory() -> None:
    """Hand heap memory that session creation freed back to the OS (glibc only).

    onnxruntime folds initializer-only subgraphs at load (a compressed table's tied head, 4-bit
    weights): the intermediates are freed, but glibc keeps the pages, so a q4 file's session
    held 2.4 GB instead of 0.7 GB until malloc_trim. A no-op where there is no glibc.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        if libc is not None and hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)
    except OSError:
        pass


def open_split_session(
    decode: Path, body: Path, options: ort.SessionOptions, threads: int | None
) -> ort.InferenceSession:
    """Run the weight-decode graph once, then open the body with its outputs as initializers.

    Why: folding the decode subgraph inside model.onnx keeps every folded tensor until the
    pass ends (2.7 GB peak for a 75 MB SmolLM2 file); running it as a plain graph frees each
    intermediate after its last use (1.45 GB), and the body session is the same graph with
    the same optimizations, so the logits are the same. onnxruntime copies the supplied
    tensors into the graph (documented for AddExternalInitializers), so they can go afterwards.
    """
    names, values = decode_weights(decode, threads)
    options.add_external_initializers(names, [ort.OrtValue.ortvalue_from_numpy(v) for v in values])
    return ort.InferenceSession(str(body), sess_options=options, providers=["CPUExecutionProvider"])


def decode_weights(decode: Path, threads: int | None) -> tuple[list[str], list[np.ndarray]]:
    """Run decode.onnx (no inputs) as a plain graph: optimizations off, so nothing is folded
    and each intermediate is freed after its last use. Returns its output names and values."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = threads or 0
    options.log_severity_level = 3
    decoder = ort.InferenceSession(str(decode), options, providers=["CPUExecutionProvider"])
    names = [output.name for output in decoder.get_outputs()]
    return names, decoder.run(names, {})


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
        self.model_path = self.folder / "model.onnx"
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
        # Manifest numbers are checked against the graph before anything is sized by them.
        check_against_graph(self.session, self.config, self.model_path)
        self._output_names = ["logits", *present_names(self.config.num_layers)]

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
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "position_ids": position_ids,
        }
        for i, (key, value) in enumerate(past):
            feeds[f"past_key_values.{i}.key"] = key
            feeds[f"past_key_values.{i}.value"] = value
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
