"""`tensorgpt export MODEL OUT_DIR`: load, compress the token embedding, write, verify.

    load (export/load.py) -> adapter (models/) -> compress (export/methods/, tt_ops)
    -> body graph (export/body.py) -> [quantizer hooks (export/quantizers/)]
    -> attach embedding + head (export/assemble.py) -> verify (export/verify.py) -> manifest

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
    FORMAT,
    FORMAT_VERSION,
    MANIFEST_FILE,
    MODEL_FILE,
    TOKENIZER_FILE,
    Manifest,
    ModelConfig,
)
from tensorgpt.common.files import model_file_bytes, sha256_file
from tensorgpt.common.progress import stage as step
from tensorgpt.export import manifest as mf
from tensorgpt.export.assemble import attach_embedding_and_head
from tensorgpt.export.atomic import check_target, staged_folder
from tensorgpt.export.body import export_body, load_body
from tensorgpt.export.compress import CompressionSpec, compress_embedding
from tensorgpt.export.load import LoadedModel, load
from tensorgpt.export.methods import get_method
from tensorgpt.export.quantizers import get_quantizer
from tensorgpt.export.split_load import add_split_load
from tensorgpt.export.verify import check_split, prompt_ids, verify
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
) -> dict:
    """Export `source` to `out_dir`; returns the manifest. Raises ValueError on bad input."""
    spec = spec or CompressionSpec()
    quantizer = get_quantizer(quantize)
    if quantizer.int8_cores and get_method(spec.method).int8_cores:
        spec = dataclasses.replace(spec, int8_cores=True)  # `--quantize int8` covers TT cores
    spec.validate()
    out_dir = Path(out_dir)
    check_target(out_dir, force)

    started = time.perf_counter()
    if isinstance(source, LoadedModel):
        loaded = source
    else:
        with step(f"loading {source}", log):
            loaded = load(source)
    log(f"loaded {loaded.resolved} ({type(loaded.model).__name__})")
    adapter = adapter_for(loaded.model)
    shape = adapter.shape()
    table = adapter.token_embedding().weight.detach().float().numpy()
    what = f"compressing the embedding table ({spec.method})"
    with step(what, log) if spec.method != "none" else nullcontext():
        embedding, embedding_info = compress_embedding(table, spec, adapter, loaded.tokenizer)
    details = {k: v for k, v in embedding_info.items() if k != "reconstruction"}
    log(f"embedding: method {spec.method} {details or ''}")
    tied = adapter.head_is_tied()
    untied_head = None if tied else adapter.lm_head().weight.detach().float().numpy()
    bias = adapter.head_bias()
    bias = None if bias is None else bias.detach().float().numpy()

    with staged_folder(out_dir) as stage:
        body_path = stage / BODY_FILE  # torch's body graph; replaced by the split's below
        with (
            step("exporting the transformer body to ONNX (torch.onnx)", log),
            contextlib.redirect_stdout(io.StringIO()),  # the exporter prints its own lines
        ):
            export_body(adapter, body_path)

        def quantizing():  # a fresh context per use: a @contextmanager object is single-use
            return step(f"--quantize {quantize}", log) if quantize != "none" else nullcontext()

        with quantizing():
            model = load_body(quantizer.quantize_body(body_path, stage))
        for leftover in stage.iterdir():
            leftover.unlink()
        with quantizing():
            weights_report = quantizer.quantize_weights(model, adapter, log)
        attach_embedding_and_head(model, embedding, untied_head, bias)
        if spec.method != "none":
            _assert_no_dense_table(model, shape.vocab_size, shape.hidden_size)
        model_path = stage / MODEL_FILE
        with step(f"writing {MODEL_FILE}", log):
            model = quantizer.rewrite_file(model, model_path, _save)
            _save(model, model_path)
        parts = mf.initializer_bytes(model)
        del model  # the file is written; holding the proto during verification costs its size
        gc.collect()
        loaded.tokenizer.save_pretrained(str(stage))
        if not (stage / TOKENIZER_FILE).is_file():
            raise ValueError("the tokenizer did not save a tokenizer.json; the runtime needs one")

        # PyTorch runs the same compressed weights: the decoded table, tied to the head if the
        # model ties them (assigning .data keeps the tie, as both modules share the Parameter).
        adapter.token_embedding().weight.data = torch.from_numpy(embedding.decoded().copy())
        with step("verifying against PyTorch (16-token prompt, 8 cached steps)", log):
            report = verify(
                str(model_path),
                loaded.model,
                adapter,
                loaded.tokenizer,
                quantized=quantizer.dynamic_activations,
            )

        manifest = _manifest(loaded, adapter, spec, quantize, embedding_info, parts, report, tied)
        manifest.weight_quantization = weights_report
        _set_metadata(model_path, mf.metadata_props(manifest.to_dict()))
        manifest.bytes["file"] = model_file_bytes(stage)
        if report["passed"]:
            manifest.split_load = _write_split_load(stage, adapter, loaded.tokenizer, report, log)
        manifest.tokenizer["sha256"] = sha256_file(stage / TOKENIZER_FILE)
        manifest.export_seconds = round(time.perf_counter() - started, 1)
        mf.write_manifest(stage / MANIFEST_FILE, manifest)
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


def _set_metadata(path: Path, props: dict[str, str]) -> None:
    """Rewrite the graph's metadata_props; weights in external data are not read or moved."""
    model = onnx.load(str(path), load_external_data=False)
    onnx.helper.set_model_props(model, props)
    onnx.save_model(model, str(path))


def _assert_no_dense_table(model: onnx.ModelProto, vocab: int, dim: int) -> None:
    """The tied-head trap: a compressed export must not carry a float V x D (or D x V) matrix.

    (int8 codes of the whole table are the compressed format of the int8-rows baseline.)
    """
    floats = {
        onnx.TensorProto.FLOAT,
        onnx.TensorProto.FLOAT16,
        onnx.TensorProto.DOUBLE,
        onnx.TensorProto.BFLOAT16,
    }
    for tensor in model.graph.initializer:
        if tensor.data_type in floats and sorted(tensor.dims) == sorted([vocab, dim]):
            raise RuntimeError(
                f"compressed export still holds a dense {list(tensor.dims)} tensor {tensor.name}"
            )


def _manifest(loaded, adapter, spec, quantize, embedding_info, parts, report, tied) -> Manifest:
    shape = adapter.shape()
    dense_bytes = shape.vocab_size * shape.hidden_size * 4
    cfg = adapter.config
    tok = loaded.tokenizer
    eos = cfg.eos_token_id if cfg.eos_token_id is not None else tok.eos_token_id
    return Manifest(
        format=FORMAT,
        format_version=FORMAT_VERSION,
        tool_version=mf.tool_version(),
        source=loaded.source,
        architecture=type(loaded.model).__name__,
        position_encoding=adapter.position_encoding,
        method=spec.method,
        method_options=spec.options(),
        quantize=quantize,
        tied_head=tied,
        config=ModelConfig(
            vocab_size=shape.vocab_size,
            hidden_size=shape.hidden_size,
            num_layers=shape.num_layers,
            num_kv_heads=shape.num_kv_heads,
            head_dim=shape.head_dim,
            max_position_embeddings=shape.max_position_embeddings,
            bos_token_id=cfg.bos_token_id if cfg.bos_token_id is not None else tok.bos_token_id,
            eos_token_id=eos,
            pad_token_id=cfg.pad_token_id if cfg.pad_token_id is not None else tok.pad_token_id,
        ),
        tokenizer={"name_or_path": loaded.source, "vocab_size": len(tok)},
        embedding_info={k: v for k, v in embedding_info.items() if k != "reconstruction"},
        reconstruction=embedding_info["reconstruction"],
        bytes={
            "initializers": parts,
            "embedding": parts["embedding"],
            "embedding_dense_fp32": dense_bytes,
            "rest": parts["rest"] + parts["lm_head"],
        },
        ratios={"embedding_bytes": round(dense_bytes / max(parts["embedding"], 1), 4)},
        verification=report,
    )
