"""`tensorgpt export`: the subcommand; torch and onnx are imported only when it runs."""

from __future__ import annotations

import argparse
import json

from tensorgpt.cli import Command

# Mirrors export.compress.METHODS (not imported here: that module pulls in onnx).
METHOD_CHOICES = ["none", "tt", "tt-matrix", "svd", "int8-rows", "int4-rows", "tc"]


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(
            int(v) for v in text.replace("x", ",").replace("*", ",").split(",") if v.strip()
        )
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected integers like 4,4,4,4,3, got {text!r}"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "model",
        metavar="MODEL",
        help="hub id (gpt2, distilgpt2, ...), checkpoint folder, .gguf file, or smollm2-135m (offline default)",
    )
    p.add_argument(
        "out_dir",
        metavar="OUT_DIR",
        help="folder to write model.onnx, manifest.json and the tokenizer to",
    )
    p.add_argument(
        "--method",
        default="none",
        choices=METHOD_CHOICES,
        help="token-embedding compression (default: none); svd and int*-rows are baselines; "
        "tc needs --calib-text",
    )
    p.add_argument(
        "--rank",
        type=int,
        help="TT rank cap (tt default: 4, the TensorGPT paper's setting); svd: singular values "
        "kept (default: 64)",
    )
    p.add_argument(
        "--factors",
        type=_int_list,
        help="tt: mode sizes of a row (default: 2s over the row padded to a power of two); "
        "tt-matrix: factors of the hidden size",
    )
    p.add_argument(
        "--vocab-factors", type=_int_list, help="tt-matrix: factors of the (padded) vocabulary"
    )
    p.add_argument(
        "--rel-error", type=float, help="error-bounded TT-SVD: target relative error per row"
    )
    p.add_argument(
        "--quantize",
        default="none",
        choices=["none", "int8", "ort-int8", "q4"],
        help="transformer weights (default: none, fp32); "
        "int8: onnxruntime dynamic int8 for the transformer MatMuls and int8 TT cores; "
        "ort-int8: onnxruntime's stock quantize_dynamic of the whole file (a baseline); "
        "q4: weights as 4-bit blocks of 32 with fp16 scale and minimum (llama.cpp Q4_1 grid, "
        "kept exactly for a Q4_1 GGUF source), decoded once at session load",
    )
    p.add_argument(
        "--bits-per-weight",
        type=float,
        help="tc: table budget in bits per entry (default: 2.2, 14.5x smaller than fp32; the "
        "README's recommendation: the smallest budget of the sweep grid that keeps SmolLM2-135M's "
        "perplexity within 1%% of fp32)",
    )
    p.add_argument(
        "--calib-text",
        help="tc (required): UTF-8 text from the model's domain for token counts and loss "
        "sensitivity, e.g. wikitext-2 valid.txt; never the evaluation text",
    )
    p.add_argument(
        "--heal-steps",
        type=int,
        default=0,
        help="tc: after coding, fit the codebooks, scales, means and basis to the original "
        "model's next-token distributions on --calib-text for this many steps of 2 x 512 tokens "
        "(about 8 s each for SmolLM2-135M on 2 cores; 200 fits in 30 min). Resumable: rerun the "
        "same command after an interruption (checkpoints in ~/.cache/tensorgpt/heal)",
    )
    p.add_argument("--force", action="store_true", help="replace OUT_DIR if it exists")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")


def run_export(args: argparse.Namespace) -> int:
    from tensorgpt.export.compress import CompressionSpec
    from tensorgpt.export.exporter import export_model

    spec = CompressionSpec(
        method=args.method,
        rank=args.rank,
        factors=args.factors,
        vocab_factors=args.vocab_factors,
        rel_error=args.rel_error,
        int8_cores=args.quantize == "int8" and args.method in ("tt", "tt-matrix"),
        bits_per_weight=args.bits_per_weight,
        calib_text=args.calib_text,
        heal_steps=args.heal_steps,
    )
    if args.vocab_factors and args.method != "tt-matrix":
        raise ValueError("--vocab-factors needs --method tt-matrix")
    manifest = export_model(
        args.model, args.out_dir, spec, quantize=args.quantize, force=args.force
    )
    if args.json:
        print(json.dumps(manifest, indent=2, sort_keys=True))
    else:
        print(summary(manifest))
    return 0


def summary(manifest: dict) -> str:
    b, v = manifest["bytes"], manifest["verification"]
    lines = [
        f"model.onnx: {b['file'] / 1e6:.1f} MB  (embedding {b['embedding'] / 1e6:.2f} MB, "
        f"{manifest['ratios']['embedding_bytes']:.2f}x smaller than dense fp32)",
        f"verification: {'passed' if v['passed'] else 'FAILED'}, max abs logit diff "
        f"{v['max_abs_logit_diff']:.2e}, greedy tokens match: {v['greedy_match']}",
    ]
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
            f"max abs logit diff vs model.onnx {diff:.2e}): the runtime loads them with about "
            "half the peak memory; keep them beside model.onnx"
        )
    return "\n".join(lines)


def add_split_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out_dir", metavar="OUT_DIR", help="folder written by `tensorgpt export`")


def run_split(args: argparse.Namespace) -> int:
    """Add decode.onnx + body.onnx to a folder exported before `export` wrote them."""
    import numpy as np

    from tensorgpt.export.manifest import write_manifest
    from tensorgpt.export.split_load import add_split_load
    from tensorgpt.export.verify import check_split
    from tensorgpt.runtime_demo.manifest import check_folder, load_manifest

    folder = check_folder(args.out_dir)
    manifest, config = load_manifest(folder)  # config: layers, KV heads, head size, vocab
    # Any fixed ids do: both sides run the same weights in onnxruntime.
    ids = (np.arange(16, dtype=np.int64)[None, :] * 7919 + 11) % config.vocab_size
    tokens = [int(t) for t in (np.arange(8) * 104729 + 13) % config.vocab_size]
    split = add_split_load(folder, lambda f: check_split(f, config, ids, tokens))
    manifest["split_load"] = split
    write_manifest(folder / "manifest.json", manifest)
    if split is None:
        print("nothing to split: model.onnx decodes less than 16 MB of weights at load")
    else:
        diff = split["verification"]["max_abs_logit_diff_vs_model_onnx"]
        print(
            f"wrote {split['decode']} + {split['body']} ({split['bytes'] / 1e6:.2f} MB), "
            f"max abs logit diff vs model.onnx {diff:.2e}"
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
