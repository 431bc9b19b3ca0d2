"""torch -> ONNX for the decoder body: inputs_embeds and a KV cache in, hidden state and cache out.

The token embedding and the LM head stay out of this graph on purpose: they are attached
afterwards by `export/assemble.py` as plain ONNX ops we write ourselves, so no exporter
optimisation can fold a compressed table back into a dense one.

transformers 5 keeps the cache in a DynamicCache object, not a tuple of tensors, so a small
wrapper takes flat tensors, fills a DynamicCache, and returns flat tensors again.

The cache is built without the config on purpose: every layer is a full-length DynamicLayer,
so `present.{i}` is always past + seq for every layer (the one KV contract the runtime knows),
also for sliding-window layers (Gemma 2/3, Mistral, Qwen2), whose window the body's own
sliding-window mask enforces inside the graph (the mask is built from the config, not from
the cache's layer type). A config-built cache would crop those layers to the window.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from tensorgpt.common.contract import ATTENTION_MASK, POSITION_IDS, past_names, present_names
from tensorgpt.models import ModelAdapter
from tensorgpt.models.cache_api import cache_argument, returned_cache

OPSET = 18


def input_names(num_layers: int) -> list[str]:
    return ["inputs_embeds", ATTENTION_MASK, POSITION_IDS, *past_names(num_layers)]


def output_names(num_layers: int) -> list[str]:
    return ["hidden_states", *present_names(num_layers)]


class CachedBody(nn.Module):
    """Flat-tensor view of `adapter.decoder_body()` with a cache, for torch.export."""

    def __init__(self, adapter: ModelAdapter) -> None:
        super().__init__()
        self.body = adapter.decoder_body()
        self.config = adapter.config
        self.num_layers = adapter.shape().num_layers
        self.cache_argument = cache_argument(self.body)

    def forward(self, inputs_embeds, attention_mask, position_ids, *past):
        from transformers.cache_utils import DynamicCache

        cache = DynamicCache()  # full-length layers: see the module docstring
        for i in range(self.num_layers):
            cache.update(past[2 * i], past[2 * i + 1], i)
        out = self.body(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=True,
            **{self.cache_argument: cache},
        )
        present = []
        for layer in returned_cache(out).layers:
            present += [layer.keys, layer.values]
        return (out.last_hidden_state, *present)


def example_inputs(adapter: ModelAdapter, batch: int = 2, seq: int = 3, past: int = 4):
    """Tracing inputs; sizes differ from each other so that no dynamic dim gets specialised."""
    s = adapter.shape()
    g = torch.Generator().manual_seed(0)
    embeds = torch.randn(batch, seq, s.hidden_size, generator=g)
    mask = torch.ones(batch, past + seq, dtype=torch.int64)
    positions = torch.arange(past, past + seq).unsqueeze(0).expand(batch, seq).contiguous()
    cache = [
        torch.randn(batch, s.num_kv_heads, past, s.head_dim, generator=g)
        for _ in range(2 * s.num_layers)
    ]
    return (embeds, mask, positions, *cache)


def trace_program(adapter: ModelAdapter, optimize: bool = True):
    """torch.onnx's program for the body: dynamic batch, sequence and cache lengths.

    optimize=False leaves the graph as traced (the streaming export folds the weight
    transposes itself, export/lazy_body.py).
    """
    s = adapter.shape()
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
    total, past = torch.export.Dim("total"), torch.export.Dim("past")
    cache_shape = {0: batch, 2: past}
    dynamic_shapes = (
        {0: batch, 1: seq},
        {0: batch, 1: total},
        {0: batch, 1: seq},
        tuple(cache_shape for _ in range(2 * s.num_layers)),
    )
    wrapper = CachedBody(adapter).eval()
    # torch.onnx logs one warning per missing torchvision op it could translate; not our concern.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with (
        warnings.catch_warnings(),
        torch.no_grad(),
        contextlib.redirect_stdout(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        return torch.onnx.export(
            wrapper,
            example_inputs(adapter),
            None,
            input_names=input_names(s.num_layers),
            output_names=output_names(s.num_layers),
            dynamic_shapes=dynamic_shapes,
            opset_version=OPSET,
            dynamo=True,
            verbose=False,
            optimize=optimize,
        )


def export_body(adapter: ModelAdapter, path: Path) -> None:
    """Write the body graph to `path` (a single file; weights inline or as external data)."""
    trace_program(adapter).save(str(path), external_data=True)


def load_body(path: Path):
    """Load the written body without the exporter's per-node debug metadata.

    torch.onnx records an FX node, module stack and source location on every node: a third
    of a small file, and text that differs between machines (paths), which would break
    byte-identical exports.
    """
    import onnx

    model = onnx.load(str(path))
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    model.doc_string = ""
    return model
