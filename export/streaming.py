"""`tensorgpt export --stream`: memory that grows with the largest tensor, not with the model.

    config -> skeleton (meta weights)
    -> [a table method: the table read once, coded (export/methods/), then freed]
    -> body traced without weights (export/lazy_body.py)
    -> [q4: each weight's codes deferred too (export/weight_blocks.py)]
    -> embedding + head attached (export/assemble.py), dense tables deferred as well
    -> model.onnx + model.onnx.data written tensor by tensor (export/stream_write.py):
       each read from the checkpoint (export/checkpoint_tensors.py), converted, written, freed
    -> parity check on a model made of the first and last layers (export/verify_layers.py)

The peak is about the graph, torch and onnx, plus a few copies of the largest tensor (the
embedding table while it is read and coded in chunks of rows, or handed to the graph builder;
the check's two layers, table and head, in PyTorch and then in onnxruntime, never both). The file always
has external data (one model.onnx.data), which onnxruntime memory-maps where it can.

Table methods: the same code as the in-memory export, on the same table, so the same file
(tested), except `tc`, which calibrates by running the model; here it never holds the model,
so tc calibrates without running it (export/methods/tc.py `calibrate_without_model`: the
text's token counts and the tokenizer's prior, plain squared error as the metric) and its
file differs. `--heal-steps` (which trains against the model) is refused.

Scope: a local safetensors checkpoint folder (one file or shards), `--quantize none | q4`,
`--runtime portable`; anything else is refused in one line.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tensorgpt.common.contract import MODEL_FILE, TOKENIZER_FILE
from tensorgpt.common.files import model_file_bytes, stored_path
from tensorgpt.common.progress import stage as step
from tensorgpt.export import manifest as mf
from tensorgpt.export.assemble import assert_no_dense_table, attach_embedding_and_head
from tensorgpt.export.atomic import staged_folder
from tensorgpt.export.checkpoint_tensors import CheckpointTensors, ParameterMap, has_safetensors
from tensorgpt.export.compress import CompressionSpec, compress_embedding, report_embedding
from tensorgpt.export.embedding_graph import DenseEmbedding
from tensorgpt.export.stream_write import Deferred, save_streaming

STREAM_QUANTIZERS = ("none", "q4")


class DeferredDense(DenseEmbedding):
    """A dense (V, D) table stored as a placeholder (GraphBuilder.placeholder): same nodes
    and initializer name as DenseEmbedding, values filled in when the file is written."""

    def __init__(self, shape: tuple[int, int]) -> None:
        self.weight = None
        self.vocab_size, self.dim = shape
        self._name = None

    def _initializer(self, b) -> str:
        if self._name is None:
            self._name = b.placeholder("weight", (self.vocab_size, self.dim), np.float32)
        return self._name

    @property
    def name(self) -> str:
        return self._name

    def dense(self) -> np.ndarray:
        raise RuntimeError("a streaming export's table is read when written, not held")


def check_streamable(source: str, spec: CompressionSpec, quantize: str, runtime: str) -> Path:
    """The checkpoint folder `--stream` will read; ValueError naming what it cannot do."""
    from tensorgpt.export.load import resolve

    where, gguf = resolve(source)
    if gguf or not has_safetensors(where):
        raise ValueError(
            f"--stream reads a local safetensors checkpoint folder; {source} is not one "
            "(export it without --stream)"
        )
    if spec.heal_steps:
        raise ValueError("--stream does not run the model: --heal-steps needs the in-memory export")
    if quantize not in STREAM_QUANTIZERS:
        raise ValueError(
            f"--stream works with --quantize {' or '.join(STREAM_QUANTIZERS)}, got {quantize!r}"
        )
    if runtime != "portable":
        raise ValueError(f"--stream works with --runtime portable, got {runtime!r}")
    return Path(where)


def table_graph(
    read: Callable[[], np.ndarray], shape: tuple[int, int], spec: CompressionSpec, tokenizer, log
) -> tuple[DenseEmbedding, dict]:
    """The embedding graph for `spec` and its report: --method none a placeholder read when
    written; a table method codes the table read once (compress_embedding without a model),
    and keeps only the code."""
    if spec.method == "none":
        return DeferredDense(shape), {"reconstruction": None}  # as methods/none.py
    with step(f"compressing the embedding table ({spec.method})", log):
        embedding, info = compress_embedding(read(), spec, None, tokenizer)
    return embedding.fresh(), info  # the decoded table the metrics needed is dropped


def build_file(
    folder: Path,
    config,
    spec: CompressionSpec,
    quantize: str,
    model_path: Path,
    log: Callable[[str], None],
    tokenizer,
    params_map: Callable[[ParameterMap], ParameterMap] = lambda p: p,
    keep_decoded: dict | None = None,
    table: tuple | None = None,
) -> dict:
    """Write model.onnx (+ .data) at `model_path` from `folder`'s tensors; returns what the
    manifest needs (adapter, skeleton, embedding and its info, byte parts, weight report,
    tied). table: (embedding graph, info) coded before (the parity check reuses the file's)."""
    from tensorgpt.export.lazy_body import skeleton, trace_body
    from tensorgpt.export.weight_blocks import quantize_weights_q4

    model = skeleton(config)
    adapter = skeleton_adapter(model)
    params = params_map(ParameterMap(CheckpointTensors(folder), model.base_model_prefix))
    names = {id(p): n for n, p in model.named_parameters()}  # a tied head: the table's name

    def read(param) -> Callable[[], np.ndarray]:
        key = params.key(names[id(param)], tuple(param.shape))
        return lambda: params.tensors.read(key)

    table_read = read(adapter.token_embedding().weight)
    tied = adapter.head_is_tied()
    head_read = None if tied else read(adapter.lm_head().weight)
    bias = adapter.head_bias()
    bias = None if bias is None else read(bias)()
    table_shape = tuple(adapter.token_embedding().weight.shape)
    if table is None:
        table = table_graph(table_read, table_shape, spec, tokenizer, log)
    embedding, info = table[0].fresh(), table[1]
    with step("exporting the transformer body to ONNX without weights (torch.onnx)", log):
        body, deferred = trace_body(adapter, model, params)
    weights_report = None
    if quantize == "q4":
        _, weights_report = quantize_weights_q4(body, deferred, keep_decoded)
    # an untied head is dense (as in memory): a placeholder too, read when it is written
    untied = None if head_read is None else DeferredDense(tuple(adapter.lm_head().weight.shape))
    scale, quirks = adapter.embedding_scale(), adapter.head_quirks()
    attach_embedding_and_head(body, embedding, untied, bias, scale, quirks)
    if isinstance(embedding, DeferredDense):
        deferred[embedding.name] = Deferred(table_read, "embedding")
    else:
        assert_no_dense_table(body, *table_shape, tied)
    if untied is not None:
        deferred[untied.name] = Deferred(head_read, "lm_head")
    parts = mf.initializer_bytes(body)
    warning = mf.table_size_warning(parts, spec.method, 4 * table_shape[0] * table_shape[1])
    if warning:
        log(warning)
    save_streaming(body, deferred, model_path, log)
    return {
        "model": model,
        "adapter": adapter,
        "embedding": embedding,
        "embedding_info": info,
        "parts": parts,
        "weights_report": weights_report,
        "tied": tied,
    }


def _peak_rss_gb() -> float:
    """This process's peak resident set so far (Linux reports KiB), to tell which stage of a
    large export sets the peak."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def skeleton_adapter(model):
    """adapter_for(model) on a skeleton: the generic adapter's check looks up 4 rows of a
    scaled embedding (Gemma), so the table is a stand-in of ones for that moment (a
    zero-stride view: no memory), then the meta parameter again."""
    import torch

    from tensorgpt.models import adapter_for

    embedding = model.get_input_embeddings()
    weight = embedding.weight
    stand_in = torch.ones((), dtype=weight.dtype).expand(weight.shape)
    embedding.weight = torch.nn.Parameter(stand_in, requires_grad=False)
    try:
        return adapter_for(model)
    finally:
        embedding.weight = weight


def export_streaming(source: str, out_dir: Path, spec: CompressionSpec, quantize: str, log) -> dict:
    """The whole `--stream` export into `out_dir` (caller holds the OUT_DIR lock)."""
    from transformers import AutoConfig, AutoTokenizer, PretrainedConfig

    from tensorgpt.export.exporter import VerificationError
    from tensorgpt.export.load import LoadedModel
    from tensorgpt.export.q4_source import rerounded_lines
    from tensorgpt.export.verify_layers import verify_layers
    from tensorgpt.models.generic import unloadable

    started = time.perf_counter()
    folder = check_streamable(source, spec, quantize, "portable")
    try:
        raw = PretrainedConfig.get_config_dict(str(folder))[0]
    except Exception as exc:  # noqa: BLE001  (transformers raises many types)
        raise ValueError(f"could not read {folder}'s config: {exc}") from exc
    if (refusal := unloadable(raw)) is not None:  # before from_config's list of every class
        raise ValueError(refusal)
    try:
        config = AutoConfig.from_pretrained(str(folder))
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except Exception as exc:  # noqa: BLE001  (transformers raises many types)
        raise ValueError(f"could not read {folder}'s config or tokenizer: {exc}") from exc
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"model '{source}' has no fast tokenizer (tokenizer.json)")
    with staged_folder(out_dir) as stage:
        model_path = stage / MODEL_FILE
        built = build_file(folder, config, spec, quantize, model_path, log, tokenizer)
        report_embedding(spec, built["embedding_info"], log)
        log(f"peak RSS after writing {MODEL_FILE}: {_peak_rss_gb():.2f} GB")
        adapter, weights_report = built["adapter"], built["weights_report"]
        if weights_report:
            weights_report["source_is_gguf"] = False
            weights_report["tensors"] = dict(sorted(weights_report["tensors"].items()))
            for line in rerounded_lines(weights_report):
                log(line)
        tokenizer.save_pretrained(str(stage))
        if not (stage / TOKENIZER_FILE).is_file():
            raise ValueError("the tokenizer did not save a tokenizer.json; the runtime needs one")
        with step("verifying against PyTorch (first and last layers, embedding, head)", log):
            report = verify_layers(folder, config, tokenizer, spec, quantize, stage, built)
        log(f"peak RSS after the check: {_peak_rss_gb():.2f} GB")
        loaded = LoadedModel(built["model"], tokenizer, stored_path(source), str(folder))
        manifest = mf.build_manifest(
            loaded,
            adapter,
            spec,
            quantize,
            built["embedding_info"],
            built["parts"],
            report,
            built["tied"],
        )
        manifest.weight_quantization = weights_report
        manifest.runtime = "portable"
        mf.set_metadata(model_path, mf.metadata_props(manifest.to_dict()))
        manifest.bytes["file"] = model_file_bytes(stage)
        mf.seal(stage, manifest, started)
        if not report["passed"]:
            raise VerificationError(
                f"verification failed ({report['checked']}): max abs logit diff "
                f"{report['max_abs_logit_diff']:.3g} (tolerance {report['tolerance']}), "
                f"greedy tokens match: {report['greedy_match']}"
            )
    log(
        f"wrote {out_dir} ({manifest.bytes['file'] / 1e6:.1f} MB), checked {report['checked']}: "
        f"max abs logit diff {report['max_abs_logit_diff']:.2e}"
    )
    return manifest.to_dict()
