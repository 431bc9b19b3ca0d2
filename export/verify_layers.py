"""The parity check of a streaming export, in memory that fits: first and last layers only.

A model too large to hold in PyTorch is checked through a smaller one built from the same
checkpoint by the same streaming path: the embedding, the first and the last decoder layer
(renumbered 0 and 1) and the head. Its ONNX file is written exactly as the large one is
(trace without weights, deferred reads, q4 encode, embedding and head), and PyTorch runs the
same tensors (for q4 the decoded weights), so a wrong name, transpose, quantization or
assembly shows up as a logit difference. The report says what was checked (`checked`).

Tolerance: the ONNX file computes in float32 whatever the checkpoint stores (bf16 and fp16
are widened exactly when read, as `from_pretrained(dtype=float32)` does), so the float32
tolerance of export/verify.py (`parity_tolerance`) applies to every source dtype.
"""

from __future__ import annotations

import copy
import gc
import re
import shutil
from pathlib import Path

import numpy as np

from tensorgpt.common.contract import MODEL_FILE
from tensorgpt.export.checkpoint_tensors import CheckpointTensors, ParameterMap

_LAYER = re.compile(r"^(.*?\.)(\d+)(\..*)$")  # the first numeric path part: the layer index


class LayerSubset(ParameterMap):
    """A ParameterMap for a model of `len(layers)` layers whose layer j is `layers[j]`."""

    def __init__(self, inner: ParameterMap, layers: list[int]) -> None:
        super().__init__(inner.tensors, inner.base_prefix)
        self.layers = layers

    def key(self, name: str, shape: tuple[int, ...]) -> str:
        match = _LAYER.match(name)
        if match:
            name = f"{match[1]}{self.layers[int(match[2])]}{match[3]}"
        return super().key(name, shape)


def subset_config(config, layers: list[int]):
    """`config` with only `layers` (renumbered from 0)."""
    sub = copy.deepcopy(config)
    sub.num_hidden_layers = len(layers)
    for field in ("layer_types", "no_rope_layers"):
        values = getattr(sub, field, None)
        if isinstance(values, list) and len(values) == config.num_hidden_layers:
            setattr(sub, field, [values[i] for i in layers])
    return sub


def verify_layers(
    folder: Path, config, tokenizer, spec, quantize: str, stage: Path, built: dict
) -> dict:
    """Export and check the first-and-last-layer model of `folder`; the verify.py report plus
    `checked` (what the check covered). built: what the whole file's build_file returned;
    its coded table is reused (a table method is not fitted twice) and PyTorch runs its
    decoded values, as the in-memory check does."""
    import torch
    from accelerate.utils import set_module_tensor_to_device

    from tensorgpt.export.lazy_body import module_name, skeleton
    from tensorgpt.export.streaming import build_file, skeleton_adapter
    from tensorgpt.export.verify import compare_with_onnx, torch_reference

    total = config.num_hidden_layers
    layers = sorted({0, total - 1})
    sub = subset_config(config, layers)
    work = stage / ".verify"
    work.mkdir()
    decoded: dict = {}
    check_table = _check_table(built)
    try:
        small = build_file(
            folder,
            sub,
            spec,
            quantize,
            work / MODEL_FILE,
            lambda line: None,
            tokenizer,
            lambda params: LayerSubset(params, layers),
            keep_decoded=decoded,
            table=(check_table, built["embedding_info"]),
        )
        coded = None if spec.method == "none" else small["embedding"]
        model = skeleton(sub)  # the traced one's buffers were moved to the meta device
        adapter = skeleton_adapter(model)
        params = LayerSubset(
            ParameterMap(CheckpointTensors(folder), model.base_model_prefix), layers
        )
        prefix = module_name(model, adapter.decoder_body()) + "."
        table = adapter.token_embedding().weight
        untied = [] if small["tied"] else [table, *adapter.lm_head().parameters()]
        for name, param in list(model.named_parameters()):
            local = name[len(prefix) :] if name.startswith(prefix) else None
            if any(param is p for p in untied):  # rows on demand, head in chunks (below)
                continue
            if local in decoded:  # q4: the decoded weight instead of the stored one
                values = np.ascontiguousarray(decoded.pop(local))
            elif param is table and coded is not None:  # a table method: the decoded table
                values = coded.dense()
            else:
                values = params.tensors.read(params.key(name, tuple(param.shape)))
            set_module_tensor_to_device(model, name, "cpu", value=torch.from_numpy(values))
            del values
        if small["tied"]:
            model.tie_weights()
        else:
            _rows_and_head(model, adapter, params, coded)
        if decoded:
            raise RuntimeError(f"decoded weights of no parameter: {sorted(decoded)[:3]}")
        ids, logits, tokens = torch_reference(model, adapter, tokenizer)
        shape = adapter.shape()
        # PyTorch's copy goes before onnxruntime loads
        del model, adapter, decoded, small, coded, table, untied
        gc.collect()
        # no constant folding: its pass would hold every decoded weight and table at once
        report = compare_with_onnx(
            str(work / MODEL_FILE), shape, ids, logits, tokens, False, fold=False
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    whole = total <= len(layers)
    report["checked"] = (
        f"the whole model ({total} layers)"
        if whole
        else f"layers {layers[0]} and {layers[-1]} of {total}, with the embedding and head"
    )
    if getattr(check_table, "rows_from_codes", False):
        report["checked"] += " (the table's rows decoded from their codes where looked up)"
    return report


def _check_table(built: dict):
    """The file's coded table for the check's file; with an untied head, a transform code
    decodes only the looked-up rows there (`rows_from_codes`: the same codes and decode ops,
    the Gather moved before them), as the check's session would otherwise decode the whole
    table at each step. A tied head's logits need the whole table: the same graph as the file."""
    table = built["embedding"].fresh()
    if not built["tied"] and hasattr(table, "rows_from_codes"):
        table.rows_from_codes = True
    return table


def _rows_and_head(model, adapter, params: ParameterMap, coded) -> None:
    """An untied head's check holds neither table nor head (export/verify_rows.py): the
    embedding makes the rows of the check's tokens when first looked up (a table method
    decodes them from its code, `none` reads them), the head is read in chunks of rows."""
    from tensorgpt.export.verify_rows import ChunkedHead, RowsOnDemand

    names = {id(p): n for n, p in model.named_parameters()}
    embedding, head = adapter.token_embedding(), adapter.lm_head()
    table_key = params.key(names[id(embedding.weight)], tuple(embedding.weight.shape))
    head_key = params.key(names[id(head.weight)], tuple(head.weight.shape))
    if coded is None:

        def row(i: int) -> np.ndarray:
            return params.tensors.read(table_key, i, i + 1)[0]

    else:

        def row(i: int) -> np.ndarray:
            return coded.dense_rows(i, i + 1)[0]

    bias = getattr(head, "bias", None)
    if bias is not None:
        bias = params.tensors.read(params.key(names[id(bias)], tuple(bias.shape)))
    vocab, dim = head.weight.shape
    RowsOnDemand(embedding, row)
    model.set_output_embeddings(
        ChunkedHead(
            lambda start, stop: params.tensors.read(head_key, start, stop), vocab, dim, bias
        )
    )
