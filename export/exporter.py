"""`tensorgpt export MODEL OUT_DIR`: load, compress the token embedding, write, verify.

    load (export/load.py) -> adapter (models/) -> compress (export/compress.py, tt_ops)
    -> body graph (export/body.py) -> attach embedding + head (export/assemble.py)
    -> [int8 MatMuls (export/quantize.py)] -> verify (export/verify.py) -> manifest

Everything is written into a staging folder beside OUT_DIR and renamed at the end, so a
failure (bad input, disk full, failed verification) leaves OUT_DIR as it was.
"""

from __future__ import annotations

import contextlib
import gc
import io
import sys
import time
from collections.abc import Callable
from pathlib import Path

import onnx
import torch

from tensorgpt.export import manifest as mf
from tensorgpt.export.assemble import attach_embedding_and_head
from tensorgpt.export.atomic import check_target, staged_folder
from tensorgpt.export.body import export_body, load_body
from tensorgpt.export.compress import CompressionSpec, compress_embedding
from tensorgpt.export.load import LoadedModel, load
from tensorgpt.export.quantize import quantize_all_int8, quantize_body_int8
from tensorgpt.export.split_load import add_split_load
from tensorgpt.export.verify import check_split, prompt_ids, verify
from tensorgpt.export.weight_blocks import load_decoded_into_torch, quantize_weights_q4
from tensorgpt.files import model_file_bytes, sha256_file
from tensorgpt.models import adapter_for
from tensorgpt.progress import stage as step

QUANTIZE = ("none", "int8", "ort-int8", "q4")
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
    spec.validate()
    if quantize not in QUANTIZE:
        raise ValueError(f"--quantize must be one of {', '.join(QUANTIZE)}, got {quantize!r}")
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
    with step(what, log) if spec.method != "none" else contextlib.nullcontext():
        embedding, embedding_info = compress_embedding(
            table, spec, loaded.model, loaded.tokenizer, log=log
        )
    details = {k: v for k, v in embedding_info.items() if k != "reconstruction"}
    log(f"embedding: method {spec.method} {details or ''}")
    tied = adapter.head_is_tied()
    untied_head = None if tied else adapter.lm_head().weight.detach().float().numpy()
    bias = adapter.head_bias()
    bias = None if bias is None else bias.detach().float().numpy()

    with staged_folder(out_dir) as stage:
        body_path = stage / "body.onnx"
        with (
            step("exporting the transformer body to ONNX (torch.onnx)", log),
            contextlib.redirect_stdout(io.StringIO()),  # the exporter prints its own lines
        ):
            export_body(adapter, body_path)
        if quantize == "int8":
            with step("int8 MatMuls (onnxruntime quantize_dynamic)", log):
                quantize_body_int8(body_path, stage / "body.int8.onnx")
            body_path = stage / "body.int8.onnx"
        model = load_body(body_path)
        for leftover in stage.iterdir():
            leftover.unlink()
        weights_report = None
        if quantize == "q4":
            with step("q4 weights: 4-bit blocks of the transformer's matrices", log):
                decoded, weights_report = quantize_weights_q4(model)
                # PyTorch runs the same 4-bit weights, so the parity check stays strict
                load_decoded_into_torch(adapter.decoder_body(), decoded)
            del decoded
            log(
                f"q4 weights: {weights_report['weights']} matrices, {weights_report['exact_weights']} already on the grid"
            )
        attach_embedding_and_head(model, embedding, untied_head, bias)
        if spec.method != "none":
            _assert_no_dense_table(model, shape.vocab_size, shape.hidden_size)
        model_path = stage / "model.onnx"
        with step(f"writing {model_path.name}", log):
            if quantize == "ort-int8":
                fp32_path = stage / "fp32.onnx"
                _save(model, fp32_path)
                quantize_all_int8(fp32_path, model_path)
                fp32_path.unlink()
                model = onnx.load(str(model_path))
            _save(model, model_path)
        parts = mf.initializer_bytes(model)
        del model  # the file is written; holding the proto during verification costs its size
        gc.collect()
        loaded.tokenizer.save_pretrained(str(stage))
        if not (stage / "tokenizer.json").is_file():
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
                quantized=quantize in ("int8", "ort-int8"),  # dynamic activation quantization
            )

        manifest = _manifest(loaded, adapter, spec, quantize, embedding_info, parts, report, tied)
        manifest["weight_quantization"] = weights_report
        _set_metadata(model_path, mf.metadata_props(manifest))
        manifest["bytes"]["file"] = model_file_bytes(stage)
        if report["passed"]:
            manifest["split_load"] = _write_split_load(
                stage, adapter, loaded.tokenizer, report, log
            )
        manifest["tokenizer"]["sha256"] = sha256_file(stage / "tokenizer.json")
        manifest["export_seconds"] = round(time.perf_counter() - started, 1)
        mf.write_manifest(stage / "manifest.json", manifest)
        if not report["passed"]:
            raise VerificationError(
                f"verification failed: max abs logit diff {report['max_abs_logit_diff']:.3g} "
                f"(tolerance {report['tolerance']}), greedy tokens match: {report['greedy_match']}"
            )
    log(
        f"wrote {out_dir} ({manifest['bytes']['file'] / 1e6:.1f} MB), max abs logit diff "
        f"{report['max_abs_logit_diff']:.2e}"
    )
    return manifest


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


def _manifest(loaded, adapter, spec, quantize, embedding_info, parts, report, tied) -> dict:
    shape = adapter.shape()
    dense_bytes = shape.vocab_size * shape.hidden_size * 4
    cfg = adapter.config
    tok = loaded.tokenizer
    eos = cfg.eos_token_id if cfg.eos_token_id is not None else tok.eos_token_id
    return {
        "format": mf.FORMAT,
        "format_version": mf.FORMAT_VERSION,
        "tool_version": mf.tool_version(),
        "source": loaded.source,
        "architecture": type(loaded.model).__name__,
        "position_encoding": adapter.position_encoding,
        "method": spec.method,
        "method_options": spec.options(),
        "quantize": quantize,
        "tied_head": tied,
        "config": {
            "vocab_size": shape.vocab_size,
            "hidden_size": shape.hidden_size,
            "num_layers": shape.num_layers,
            "num_kv_heads": shape.num_kv_heads,
            "head_dim": shape.head_dim,
            "max_position_embeddings": shape.max_position_embeddings,
            "bos_token_id": cfg.bos_token_id if cfg.bos_token_id is not None else tok.bos_token_id,
            "eos_token_id": eos,
            "pad_token_id": cfg.pad_token_id if cfg.pad_token_id is not None else tok.pad_token_id,
        },
        "tokenizer": {"name_or_path": loaded.source, "vocab_size": len(tok)},
        "embedding_info": {k: v for k, v in embedding_info.items() if k != "reconstruction"},
        "reconstruction": embedding_info["reconstruction"],
        "bytes": {
            "initializers": parts,
            "embedding": parts["embedding"],
            "embedding_dense_fp32": dense_bytes,
            "rest": parts["rest"] + parts["lm_head"],
        },
        "ratios": {"embedding_bytes": round(dense_bytes / max(parts["embedding"], 1), 4)},
        "verification": report,
    }
