"""`tensorgpt export`: the subcommand; torch and onnx are imported only when it runs."""

from __future__ import annotations

import argparse
import dataclasses
import json

from tensorgpt.common.command import Command
from tensorgpt.common.contract import DEFAULT_RUNTIME, MANIFEST_FILE, MODEL_FILE, RUNTIMES


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    from tensorgpt.export.methods import all_options, get_method, method_names
    from tensorgpt.export.quantizers import get_quantizer, quantizer_names

    p.add_argument(
        "model",
        metavar="MODEL",
        help="hub id (gpt2, distilgpt2, ...), checkpoint folder, .gguf file, or smollm2-135m (offline default)",
    )
    p.add_argument(
        "out_dir",
        metavar="OUT_DIR",
        help=f"folder to write {MODEL_FILE}, {MANIFEST_FILE} and the tokenizer to",
    )
    methods = method_names()
    p.add_argument(
        "--method",
        default="none",
        choices=methods,
        help="token-embedding compression (default: none): "
        + "; ".join(f"{m}: {get_method(m).help}" for m in methods),
    )
    # Every method's options, each once (export/methods/); the spec says which apply.
    for option in all_options():
        p.add_argument(option.flag, type=option.type, default=option.default, help=option.help)
    quantizers = quantizer_names()
    p.add_argument(
        "--quantize",
        default="none",
        choices=quantizers,
        help="transformer weights (default: none): "
        + "; ".join(f"{q}: {get_quantizer(q).help}" for q in quantizers),
    )
    from tensorgpt.export.linears import get_linears, linears_names

    compressors = linears_names()
    p.add_argument(
        "--linears",
        default="none",
        choices=compressors,
        help="the transformer's linear layers in compressed form (low-rank factors, or TT-matrix "
        "cores plus sparse entries for saten), ranks allocated under --linear-ratio by the "
        "output error each kept direction saves (default: none): "
        + "; ".join(f"{c}: {get_linears(c).help}" for c in compressors[1:])
        + "; calibrated on --calib-text if given, else on text the model generates; "
        "combines with --quantize (the factors are quantized) and every --method",
    )
    p.add_argument(
        "--linear-ratio",
        type=float,
        metavar="R",
        help="--linears: the linear layers' stored weight parameters as a fraction of the "
        "original, in (0, 1) (groups whose factors would not be smaller stay dense)",
    )
    p.add_argument(
        "--linear-heal-steps",
        type=int,
        default=0,
        metavar="N",
        help="--linears: after compressing, fit only the compressed parameters (ESPACE's "
        "projections and projected weights, Saten's cores and entries) to the original "
        "model's next-token distributions for N steps of 512 tokens, on --calib-text or text "
        "the model generates; through q4 with --quantize q4 (straight-through). SmolLM2-135M: "
        "about 40 s of CPU per step (docs/results.md, 'Healing the compressed linear layers'). "
        "Resumable: "
        "rerun the same command after an interruption (checkpoints in ~/.cache/tensorgpt/heal)",
    )
    p.add_argument(
        "--weight-bits",
        type=float,
        metavar="B",
        help="--quantize mixed: the weight matrices' average bits per weight (codes, scales "
        "and minima), in [3.5, 5] (default 4.0); calibrated on --calib-text if given, else "
        "on text the model generates",
    )
    p.add_argument(
        "--runtime",
        default=DEFAULT_RUNTIME,
        choices=RUNTIMES,
        help="portable: standard ONNX ops, weights and table decoded to fp32 at session load; "
        "packed: 4-bit weights and an 8-bit tied table stay packed in RAM (onnxruntime's "
        "MatMulNBits; --quantize q4 or none; docs/device.md)",
    )
    p.add_argument(
        "--stream",
        action="store_true",
        help="read the checkpoint one tensor at a time: peak memory about the largest tensor "
        "x 3 instead of the model x 3-9, for large models (a local safetensors folder; "
        "--quantize none or q4; checks the first and last layers against PyTorch; "
        "export/streaming.py). The model is never run whole, so --method tc calibrates "
        "without it: row importance from --calib-text's token counts (with --calib-mix yes or "
        "no text: mixed with the tokenizer's prior), plain squared error instead of the "
        "loss-sensitivity metric: measured +4%% worst domain at the default budget, 3-7x "
        "perplexity out of domain at 2.2 bits (README, Large models); no --heal-steps",
    )
    p.add_argument("--force", action="store_true", help="replace OUT_DIR if it exists")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")


def run_export(args: argparse.Namespace) -> int:
    from tensorgpt.export.compress import CompressionSpec
    from tensorgpt.export.exporter import export_model
    from tensorgpt.export.linears import LinearSpec, get_linears
    from tensorgpt.export.methods import all_options, get_method
    from tensorgpt.export.quantizers import get_quantizer
    from tensorgpt.export.quantizers.base import WeightSpec

    fields = {f.name for f in dataclasses.fields(CompressionSpec)}
    values = {o.name: getattr(args, o.name) for o in all_options()}
    linears = LinearSpec(args.linears, args.linear_ratio, args.calib_text, args.linear_heal_steps)
    # --calib-text serves the linear layers too; the table method takes it only if it
    # calibrates (tc), so it is not refused for --method none or int8-rows here
    table_takes_text = "calib_text" in {o.name for o in get_method(args.method).options}
    calibrates = (args.linears != "none" and get_linears(args.linears).calibrated) or (
        get_quantizer(args.quantize).calibrated
    )
    if calibrates and not table_takes_text:
        values["calib_text"] = None
    spec = CompressionSpec(
        method=args.method,
        **{k: v for k, v in values.items() if k in fields},
        extra=tuple((k, v) for k, v in values.items() if k not in fields),
    )
    manifest = export_model(
        args.model,
        args.out_dir,
        spec,
        quantize=args.quantize,
        force=args.force,
        runtime=args.runtime,
        linears=linears,
        stream=args.stream,
        weights=WeightSpec(args.weight_bits, args.calib_text),
    )
    if args.json:
        print(json.dumps(manifest, indent=2, sort_keys=True))
    else:
        print(summary(manifest))
    return 0


def summary(manifest: dict) -> str:
    b, v = manifest["bytes"], manifest["verification"]
    lines = [
        f"{MODEL_FILE}: {b['file'] / 1e6:.1f} MB  (embedding {b['embedding'] / 1e6:.2f} MB, "
        f"{manifest['ratios']['embedding_bytes']:.2f}x smaller than dense fp32)",
        f"verification: {'passed' if v['passed'] else 'FAILED'}, max abs logit diff "
        f"{v['max_abs_logit_diff']:.2e}, greedy tokens match: {v['greedy_match']}",
    ]
    lin = manifest.get("linears")
    if lin:
        factored = sum(g["rank"] is not None for g in lin["groups"])
        lines.append(
            f"linears: {lin['method']}, {factored} of {len(lin['groups'])} groups factored, "
            f"{lin['stored_ratio']:.3f} of the linear weights' parameters"
        )
    rec = manifest.get("reconstruction")
    if rec:
        lines.append(
            f"table reconstruction: relative error {rec['rel_fro']:.4f}, MAE {rec['mae']:.3g}"
        )
    split = manifest.get("split_load")
    if split:
        diff = split["verification"]["max_abs_logit_diff_vs_model_onnx"]
        lines.append(
            f"split load: {split['decode']} + {split['body']} ({split['bytes'] / 1e6:.2f} MB, "
            f"max abs logit diff vs {MODEL_FILE} {diff:.2e}): the runtime loads them with about "
            f"half the peak memory; keep them beside {MODEL_FILE}"
        )
    return "\n".join(lines)


def add_split_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out_dir", metavar="OUT_DIR", help="folder written by `tensorgpt export`")


def run_split(args: argparse.Namespace) -> int:
    """Add decode.onnx + body.onnx to a folder exported before `export` wrote them."""
    import numpy as np

    from tensorgpt.common.contract import MODEL_FILES, TOKENIZER_FILE, Manifest, check_folder
    from tensorgpt.common.integrity import check_file, record_files
    from tensorgpt.export.manifest import runtime_files, write_manifest
    from tensorgpt.export.split_load import add_split_load
    from tensorgpt.export.verify import check_split

    folder = check_folder(args.out_dir)
    manifest = Manifest.read(folder)
    config = manifest.config  # layers, KV heads, head size, vocab
    # The split files point into model.onnx's bytes: never build them on a damaged copy (and
    # never record its hash as if it were the export's).
    recorded = manifest.file_records(folder / MANIFEST_FILE)
    for name in (*MODEL_FILES, TOKENIZER_FILE):
        if name in recorded:
            check_file(folder, name, recorded[name])
    # Any fixed ids do: both sides run the same weights in onnxruntime.
    ids = (np.arange(16, dtype=np.int64)[None, :] * 7919 + 11) % config.vocab_size
    tokens = [int(t) for t in (np.arange(8) * 104729 + 13) % config.vocab_size]
    split = add_split_load(folder, lambda f: check_split(f, config, ids, tokens))
    manifest.split_load = split
    manifest.files = record_files(folder, runtime_files(manifest))
    write_manifest(folder / MANIFEST_FILE, manifest)
    if split is None:
        print(f"nothing to split: {MODEL_FILE} decodes less than 16 MB of weights at load")
    else:
        diff = split["verification"]["max_abs_logit_diff_vs_model_onnx"]
        print(
            f"wrote {split['decode']} + {split['body']} ({split['bytes'] / 1e6:.2f} MB), "
            f"max abs logit diff vs {MODEL_FILE} {diff:.2e}"
        )
    return 0


COMMANDS = [
    Command(
        "export",
        "compress a causal LM's token embedding and write one ONNX decoder with KV cache",
        add_export_arguments,
        run_export,
    ),
    Command(
        "split",
        "add decode.onnx + body.onnx (lower peak memory at load) to an older exported folder",
        add_split_arguments,
        run_split,
    ),
]
