"""`tensorgpt export MODEL OUT_DIR`: load, compress the token embedding, write, verify.

    load (export/load.py) -> adapter (models/) -> compress (export/methods/, tt_ops)
    -> body graph (export/body.py) -> [quantizer hooks (export/quantizers/)]
    -> attach embedding + head (export/assemble.py; --runtime packed: export/packed/assemble.py)
    -> verify (export/verify.py; packed: export/packed/verify.py) -> manifest

Everything is written into a staging folder beside OUT_DIR and renamed at the end, so a
failure (bad input, disk full, failed verification) leaves OUT_DIR as it was.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import io
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import onnx
import torch

from tensorgpt.common.contract import (
    BODY_FILE,
    DEFAULT_RUNTIME,
    MODEL_FILE,
    RUNTIMES,
    TOKENIZER_FILE,
)
from tensorgpt.common.files import model_file_bytes
from tensorgpt.common.progress import stage as step
from tensorgpt.export import manifest as mf
from tensorgpt.export.assemble import assert_no_dense_table, attach_embedding_and_head
from tensorgpt.export.atomic import STAGING_MARKER, out_dir_lock, remove_stale, staged_folder
from tensorgpt.export.body import export_body, load_body
from tensorgpt.export.compress import CompressionSpec, compress_embedding, report_embedding
from tensorgpt.export.dedupe_matmuls import dedupe_matmuls
from tensorgpt.export.linears.base import LinearSpec
from tensorgpt.export.load import LoadedModel, load
from tensorgpt.export.methods import get_method
from tensorgpt.export.packed.assemble import attach_packed_embedding_and_head
from tensorgpt.export.packed.fusions import apply_fusions
from tensorgpt.export.packed.outlier_channels import split_outliers
from tensorgpt.export.packed.verify import verify_packed
from tensorgpt.export.q4_source import describe_source
from tensorgpt.export.quantizers import get_quantizer, quantizer_names
from tensorgpt.export.quantizers.base import WeightQuantizer, WeightSpec
from tensorgpt.export.split_load import add_split_load
from tensorgpt.export.target import check_target, source_path
from tensorgpt.export.verify import check_split, prompt_ids, torch_logit_fix, verify
from tensorgpt.models import adapter_for

# Past this many bytes of weights, protobuf's 2 GB limit needs ONNX external data.
EXTERNAL_DATA_THRESHOLD = 1_800_000_000


class VerificationError(ValueError):
    """The written file does not match PyTorch on the same weights."""


def _log(message: str) -> None:
    print(f"[export] {message}", file=sys.stderr, flush=True)


def export_model(
    source: str | LoadedModel,
    out_dir: str | Path,
    spec: CompressionSpec | None = None,
    quantize: str = "none",
    force: bool = False,
    log: Callable[[str], None] = _log,
    runtime: str = DEFAULT_RUNTIME,
    body_cache: dict[str, onnx.ModelProto] | None = None,
    linears: LinearSpec | None = None,
    stream: bool = False,
    weights: WeightSpec | None = None,
) -> dict:
    """Export `source` to `out_dir`; returns the manifest. Raises ValueError on bad input.

    linears: factor the transformer's linear layers (`--linears`, export/linears/) before the
    body is traced; the quantizer then sees the factors as the body's weights.
    weights: `--weight-bits` and `--calib-text` for a calibrated quantizer (--quantize mixed).
    stream: read the checkpoint tensor by tensor (export/streaming.py) instead of loading it.

    body_cache: pass the same dict to several exports of one checkpoint (other methods) to
    trace its body once; the body graph does not depend on the method (most of an export's
    time is torch.onnx tracing it). Keyed by the resolved checkpoint path.
    """
    spec = spec or CompressionSpec()
    quantizer = get_quantizer(quantize)
    if runtime not in RUNTIMES:
        raise ValueError(f"--runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    packed = runtime == "packed"
    if packed and not quantizer.packs:
        packing = [q for q in quantizer_names() if get_quantizer(q).packs]
        raise ValueError(
            f"--runtime packed works with --quantize {' or '.join(packing)}, got {quantize!r}"
        )
    if quantizer.int8_cores and get_method(spec.method).int8_cores:
        spec = dataclasses.replace(spec, int8_cores=True)  # `--quantize int8` covers TT cores
    spec.validate()
    linears = linears or LinearSpec()
    linears.validate()
    weights = weights or WeightSpec()
    if weights.bits is not None and not quantizer.calibrated:
        calibrated = [q for q in quantizer_names() if get_quantizer(q).calibrated]
        raise ValueError(f"--weight-bits needs --quantize {' or '.join(calibrated)}")
    quantizer.validate(weights)
    if not str(out_dir).strip():  # Path("") would be ".", the working directory
        raise ValueError("OUT_DIR is empty: give the folder to write the export to")
    out_dir = Path(out_dir)
    if stream:
        from tensorgpt.export.streaming import check_streamable, export_streaming

        if isinstance(source, LoadedModel):
            raise ValueError("--stream reads a checkpoint folder, not a loaded model")
        check_streamable(source, spec, quantize, runtime)
        if linears.method != "none":
            raise ValueError(f"--stream works without --linears, got --linears {linears.method}")
    if isinstance(source, LoadedModel):
        local = Path(source.resolved)
        source_at = local.resolve() if local.exists() else None
    else:
        source_at = source_path(source)  # resolves what `load` will read, without loading
    check_target(out_dir, force, source_at)  # before the model loads: fail in a second
    with out_dir_lock(out_dir.resolve()):
        check_target(out_dir, force, source_at)  # again: another export may have just finished
        remove_stale(out_dir.resolve().parent, log)
        if stream:
            return export_streaming(source, out_dir, spec, quantize, log)
        return _export(source, out_dir, spec, quantizer, runtime, log, body_cache, linears, weights)


def _export(
    source: str | LoadedModel,
    out_dir: Path,
    spec: CompressionSpec,
    quantizer: WeightQuantizer,
    runtime: str,
    log: Callable[[str], None],
    body_cache: dict[str, onnx.ModelProto] | None,
    linears: LinearSpec,
    weights: WeightSpec,
) -> dict:
    packed = runtime == "packed"
    started = time.perf_counter()
    if isinstance(source, LoadedModel):
        loaded = source
    else:
        with step(f"loading {source}", log):
            loaded = load(source)
    log(f"loaded {loaded.resolved} ({type(loaded.model).__name__})")
    adapter = adapter_for(loaded.model)
    shape = adapter.shape()
    head_hooks = adapter.hook_quirks()
    if packed and head_hooks:
        # export/packed/assemble.py does not apply these hooks yet
        raise ValueError(
            f"--runtime packed does not support {type(loaded.model).__name__} yet "
            f"({', '.join(head_hooks)}); use --runtime portable"
        )
    table = adapter.token_embedding().weight.detach().float().numpy()
    what = f"compressing the embedding table ({spec.method})"
    with step(what, log) if spec.method != "none" else nullcontext():
        embedding, embedding_info = compress_embedding(table, spec, adapter, loaded.tokenizer)
    report_embedding(spec, embedding_info, log)
    tied = adapter.head_is_tied()
    untied_head = None if tied else adapter.lm_head().weight.detach().float().numpy()
    bias = adapter.head_bias()
    bias = None if bias is None else bias.detach().float().numpy()
    linears_report = None
    if linears.method != "none":
        from tensorgpt.export.calibration import model_fingerprint
        from tensorgpt.export.linears.base import compress_linears

        with step(f"--linears {linears.method} (ratio {linears.ratio:g})", log):
            fingerprint = model_fingerprint(adapter, loaded.tokenizer)
            originals = dict(adapter.decoder_body().named_modules())  # healing's target
            linears_report = compress_linears(adapter, loaded.tokenizer, linears, fingerprint, log)
        if linears.heal_steps:
            from tensorgpt.export.linears.heal import heal_linears

            with step(f"--linear-heal-steps {linears.heal_steps}", log):
                linears_report["healing"] = heal_linears(
                    adapter,
                    loaded.tokenizer,
                    originals,
                    linears.heal_steps,
                    linears.calib_text,
                    fingerprint,
                    through_q4=quantizer.name == "q4",
                )
        originals = None  # the replaced layers' memory goes back
        body_cache = None  # the traced body differs from the checkpoint's

    with staged_folder(out_dir) as stage:

        def quantizing():  # a fresh context per use: a @contextmanager object is single-use
            name = quantizer.name
            return step(f"--quantize {name}", log) if name != "none" else nullcontext()

        model = _body(adapter, stage, quantizer, loaded.resolved, body_cache, log, quantizing)
        if linears_report is not None:
            linears_report["deduplicated"] = dedupe_matmuls(model)
        if packed:
            with quantizing():
                weights_report = quantizer.pack_weights(model, adapter, log)
            fusions = apply_fusions(model, adapter, log)
            # the lookup and the head run the 8-bit table (export/packed/table.py); PyTorch too
            _, torch_table, head_table = attach_packed_embedding_and_head(
                model, embedding, untied_head, bias
            )
            if untied_head is not None:
                adapter.lm_head().weight.data = torch.from_numpy(head_table.dense().copy())
            weights_report = {
                **(weights_report or {}),
                "outlier_channels": split_outliers(model, shape, log),
            }
        else:
            fusions = None
            with quantizing():
                if quantizer.calibrated:
                    weights_report = quantizer.quantize_calibrated(
                        model, adapter, loaded.tokenizer, weights, log
                    )
                else:
                    weights_report = quantizer.quantize_weights(model, adapter, log)
            attach_embedding_and_head(
                model,
                embedding,
                untied_head,
                bias,
                adapter.embedding_scale(),
                adapter.head_quirks(),
            )
            torch_table = embedding
        if weights_report and "tensors" in weights_report:
            describe_source(weights_report, loaded.resolved, log)
        if spec.method != "none":
            assert_no_dense_table(model, shape.vocab_size, shape.hidden_size, tied)
        model_path = stage / MODEL_FILE
        with step(f"writing {MODEL_FILE}", log):
            model = quantizer.rewrite_file(model, model_path, _save)
            _save(model, model_path)
        parts = mf.initializer_bytes(model)
        warning = mf.table_size_warning(parts, spec.method, table.nbytes)
        if warning:
            log(warning)
        del model  # the file is written; holding the proto during verification costs its size
        gc.collect()
        loaded.tokenizer.save_pretrained(str(stage))
        if not (stage / TOKENIZER_FILE).is_file():
            raise ValueError("the tokenizer did not save a tokenizer.json; the runtime needs one")

        # PyTorch runs the same compressed weights: the decoded table, tied to the head if the
        # model ties them (assigning .data keeps the tie, as both modules share the Parameter).
        table_values = torch_table.dense(model_path) if packed else embedding.decoded()
        adapter.token_embedding().weight.data = torch.from_numpy(table_values.copy())
        fix = torch_logit_fix(adapter, embedding if tied else None)
        with step("verifying against PyTorch (16-token prompt, 8 cached steps)", log), fix:
            if packed:
                report = verify_packed(model_path, loaded.model, adapter, loaded.tokenizer)
            else:
                report = verify(
                    str(model_path),
                    loaded.model,
                    adapter,
                    loaded.tokenizer,
                    quantized=quantizer.dynamic_activations,
                )

        manifest = mf.build_manifest(
            loaded, adapter, spec, quantizer.name, embedding_info, parts, report, tied
        )
        manifest.weight_quantization = weights_report
        manifest.linears = linears_report
        manifest.runtime = runtime
        manifest.fusions = fusions
        mf.set_metadata(model_path, mf.metadata_props(manifest.to_dict()))
        manifest.bytes["file"] = model_file_bytes(stage)
        if report["passed"]:
            manifest.split_load = _write_split_load(stage, adapter, loaded.tokenizer, report, log)
        mf.seal(stage, manifest, started)
        if not report["passed"]:
            raise VerificationError(
                f"verification failed: max abs logit diff {report['max_abs_logit_diff']:.3g} "
                f"(tolerance {report['tolerance']}), greedy tokens match: {report['greedy_match']}"
            )
    log(
        f"wrote {out_dir} ({manifest.bytes['file'] / 1e6:.1f} MB), max abs logit diff "
        f"{report['max_abs_logit_diff']:.2e}"
    )
    return manifest.to_dict()


def _body(
    adapter, stage: Path, quantizer, key: str, cache: dict | None, log, quantizing
) -> onnx.ModelProto:
    """The traced body graph as the quantizer wants it loaded, from `cache` when it holds it
    (only for quantizers that keep torch's body file as it is)."""
    cacheable = cache is not None and (
        type(quantizer).quantize_body is WeightQuantizer.quantize_body
    )
    if cacheable and key in cache:
        model = onnx.ModelProto()
        model.CopyFrom(cache[key])
        return model
    body_path = stage / BODY_FILE  # torch's body graph; replaced by the split's below
    with (
        step("exporting the transformer body to ONNX (torch.onnx)", log),
        contextlib.redirect_stdout(io.StringIO()),  # the exporter prints its own lines
    ):
        export_body(adapter, body_path)
    with quantizing():
        model = load_body(quantizer.quantize_body(body_path, stage))
    for leftover in stage.iterdir():
        if leftover.name != STAGING_MARKER:
            leftover.unlink()
    if cacheable:
        cache[key] = onnx.ModelProto()
        cache[key].CopyFrom(model)
    return model


def _write_split_load(stage: Path, adapter, tokenizer, report: dict, log) -> dict | None:
    """decode.onnx + body.onnx beside model.onnx (export/split_load.py), checked in onnxruntime
    on the parity check's prompt and tokens. They let the runtime load with about half the
    peak memory; model.onnx stays complete."""
    shape = adapter.shape()
    ids = prompt_ids(tokenizer, shape.vocab_size)
    try:
        with step("writing decode.onnx + body.onnx (split load) and checking them", log):
            split = add_split_load(
                stage, lambda folder: check_split(folder, shape, ids, report["greedy_tokens"])
            )
    except ValueError as exc:
        raise VerificationError(str(exc)) from None
    if split is not None:
        log(f"split load: {split['frontier_tensors']} decoded tensors, checked against model.onnx")
    return split


def _save(model: onnx.ModelProto, path: Path) -> None:
    weights = sum(mf.initializer_bytes(model).values())
    external = weights > EXTERNAL_DATA_THRESHOLD
    data = path.with_name(path.name + ".data")
    if data.exists():
        data.unlink()
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=external,
        all_tensors_to_one_file=True,
        location=data.name,
        size_threshold=1024,
    )
