"""Export peak RSS and time against model size, on random-weight checkpoints at real shapes.

    python benchmarks/export_scaling.py --shapes gpt2 --variants none,q4 [--stream both]
    python benchmarks/export_scaling.py --shapes gpt2-xl --variants none,q4 --stream on
    python benchmarks/export_scaling.py --shapes qwen2.5-7b --variants q4 --stream on
    python benchmarks/export_scaling.py --shapes qwen2.5-7b --variants q4 --stream on --layers 2

The target (issue 17): peak RSS <= 1.5 GB + 3 x the largest single tensor's fp32 bytes, and
time linear in the parameter count (seconds per billion parameters). Each checkpoint is
written here, tensor by tensor, the way such models are published (GPT-2 shapes as one fp32
model.safetensors, the 7B shape as bf16 shards with an index), so writing it never needs the
model in RAM; the free disk is checked first and the checkpoint deleted afterwards (unless
--work keeps it). Each export runs in a fresh process under `/usr/bin/time -v`, so its peak RSS
is its own; the load average is printed with every timing (the machine is shared).

`--stream both` runs today's in-memory export and the streaming one (`--stream`) on the same
checkpoint and says whether their model files hold the same graph and tensors.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# a sibling module (benchmarks/ is on sys.path when a benchmark runs as a script)
from real_shapes import GPT2_VOCAB, SHAPES

from tensorgpt.domain_texts import DEFAULT_WIKITEXT

ROOT = Path(__file__).resolve().parents[1]
CALIB = Path(DEFAULT_WIKITEXT) / "valid.txt"  # beside the repo, or TENSORGPT_DATA
TARGET_BASE = 1.5e9  # bytes: interpreter, torch, onnx, onnxruntime and the graph itself
TARGET_PER_LARGEST = 3  # x the largest tensor's fp32 bytes: read, converted, encoded
SHARD_BYTES = 2_000_000_000  # bf16 shards of about 2 GB, as HF's save_pretrained cuts them

VARIANTS = {
    "none": [],
    "q4": ["--quantize", "q4"],
    "tc+q4": ["--method", "tc", "--bits-per-weight", "2.2", "--calib-text", str(CALIB)]
    + ["--quantize", "q4"],
}


def write_checkpoint(shape: str, folder: Path) -> dict:
    """A random checkpoint of `shape` in `folder`, one tensor in RAM at a time; returns its
    parameter count, largest tensor (elements) and bytes on disk."""
    import torch
    import transformers
    from safetensors.torch import save_file

    sys.path.insert(0, str(ROOT))
    from tests.conftest import FAMILIES, SHARP_INIT, build_tokenizer

    family, overrides, dtype_name = SHAPES[shape]
    dtype = getattr(torch, dtype_name)
    folder.mkdir(parents=True, exist_ok=True)
    build_tokenizer(folder)
    config_name, model_name, extra = FAMILIES[family]
    kwargs = {**extra, **overrides}
    if family == "gpt2":
        kwargs.setdefault("vocab_size", GPT2_VOCAB)
    else:
        from tests.conftest import _LLAMA_LIKE

        kwargs = {**_LLAMA_LIKE, **kwargs}
    config = getattr(transformers, config_name)(
        initializer_range=SHARP_INIT / 8, bos_token_id=0, eos_token_id=0, **kwargs
    )
    config.torch_dtype = dtype_name
    with torch.device("meta"):  # names and shapes only
        skeleton = getattr(transformers, model_name)(config)
    tied = getattr(config, "tie_word_embeddings", True)
    names = [(n, tuple(p.shape)) for n, p in skeleton.state_dict().items()]
    if tied:
        names = [(n, s) for n, s in names if n != "lm_head.weight"]
    config.save_pretrained(str(folder))
    g = torch.Generator().manual_seed(0)
    shard: dict[str, torch.Tensor] = {}
    shard_bytes, shards, weight_map = 0, [], {}

    def flush() -> None:
        nonlocal shard, shard_bytes
        if shard:
            name = f"model-{len(shards) + 1:05d}.safetensors"
            save_file(shard, str(folder / name), metadata={"format": "pt"})
            shards.append(name)
            weight_map.update(dict.fromkeys(shard, name))
        shard, shard_bytes = {}, 0

    params, largest = 0, 0
    for name, dims in names:
        if len(dims) == 1:  # norms near 1, biases near 0
            base = 1.0 if name.endswith("weight") else 0.0
            t = base + 0.1 * torch.randn(dims, generator=g)
        else:
            t = torch.randn(dims, generator=g) * config.initializer_range
        t = t.to(dtype)
        params, largest = params + t.numel(), max(largest, t.numel())
        if shard_bytes + t.nbytes > SHARD_BYTES:
            flush()
        shard[name] = t
        shard_bytes += t.nbytes
    flush()
    if len(shards) == 1:
        (folder / shards[0]).rename(folder / "model.safetensors")
    else:
        total = sum((folder / s).stat().st_size for s in shards)
        renamed = {
            s: f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i, s in enumerate(shards)
        }
        for old, new in renamed.items():
            (folder / old).rename(folder / new)
        index = {
            "metadata": {"total_size": total},
            "weight_map": {k: renamed[v] for k, v in weight_map.items()},
        }
        (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=1))
    disk = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    return {"params": params, "largest_fp32_bytes": 4 * largest, "disk_bytes": disk}


def existing(folder: Path) -> dict | None:
    """write_checkpoint's numbers for a checkpoint written earlier (read from its headers)."""
    if not (folder / "config.json").is_file() or not (folder / "tokenizer.json").is_file():
        return None
    from tensorgpt.export.checkpoint_tensors import CheckpointTensors

    try:
        tensors = CheckpointTensors(folder)
    except ValueError:
        return None
    sizes = [math.prod(tensors.shape(k)) for k in tensors.names()]
    disk = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    return {"params": sum(sizes), "largest_fp32_bytes": 4 * max(sizes), "disk_bytes": disk}


def checkpoint_estimate(shape: str) -> int:
    """Bytes the checkpoint will take on disk (to check free space before writing)."""
    family, o, dtype = SHAPES[shape]
    size = 2 if dtype == "bfloat16" else 4
    if family == "gpt2":
        d, n = o["n_embd"], o["n_layer"]
        return size * (GPT2_VOCAB * d + n * 12 * d * d)
    d, f, n, v = o["hidden_size"], o["intermediate_size"], o["num_hidden_layers"], o["vocab_size"]
    kv = d * o["num_key_value_heads"] // o["num_attention_heads"]
    return size * (2 * v * d + n * (2 * d * d + 2 * d * kv + 3 * d * f))


def run_export(ckpt: Path, out: Path, args: list[str]) -> dict:
    """One `tensorgpt export` in a fresh process under `/usr/bin/time -v`: its time, peak RSS
    and, when it fails, the exporter's own message (time's report goes to a file of its own,
    so it never buries that line)."""
    exe = str(Path(sys.executable).with_name("tensorgpt"))
    with tempfile.NamedTemporaryFile("r", prefix="export-time-", suffix=".txt") as report:
        cmd = ["/usr/bin/time", "-v", "-o", report.name, exe, "export"]
        cmd += [str(ckpt), str(out), "--force", *args]
        started = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        timing = report.read()
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", timing)
    row = {
        "seconds": round(seconds, 1),
        "peak_rss_gb": round(int(rss.group(1)) * 1024 / 1e9, 2) if rss else None,
        "exit": proc.returncode,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    stages = re.findall(r"peak RSS after (.+?): ([\d.]+) GB", proc.stderr)
    if stages:  # --stream says which stage set the peak
        row["peak_rss_gb_after"] = {stage: float(gb) for stage, gb in stages}
    if proc.returncode == 0:
        manifest = json.loads((out / "manifest.json").read_text())
        row["file_mb"] = round(manifest["bytes"]["file"] / 1e6, 1)
        row["verification"] = {
            k: manifest["verification"].get(k)
            for k in ("max_abs_logit_diff", "tolerance", "passed", "checked")
            if k in manifest["verification"]
        }
    else:
        row["error"] = export_error(proc.stderr, timing)
    return row


def export_error(stderr: str, timing: str) -> str:
    """The failed export's message: the CLI's one line (`tensorgpt export: error: ...`), else
    the last line it wrote (a traceback's exception), else how time saw it end (a signal)."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    cli = [ln for ln in lines if ln.startswith("tensorgpt export:")]
    if cli:
        return cli[-1]
    if lines:
        return lines[-1]
    ended = re.search(r"^Command (exited|terminated) .*$", timing, re.MULTILINE)
    return ended.group(0) if ended else "no message"


def same_content(a: Path, b: Path) -> bool:
    """Both folders' model.onnx hold the same graph and tensor bytes (inline or external
    data alike; the graph's metadata_props, which carry the manifest, are left out)."""
    import onnx

    def proto(folder: Path) -> bytes:
        model = onnx.load(str(folder / "model.onnx"), load_external_data=True)
        for t in model.graph.initializer:
            if t.data_location == onnx.TensorProto.EXTERNAL:  # pragma: no cover
                raise RuntimeError("external data not loaded")
            del t.external_data[:]
            t.ClearField("data_location")
        del model.metadata_props[:]
        return model.graph.SerializeToString()

    return proto(a) == proto(b)


def with_layers(shape: str, layers: int) -> str:
    """The name of `shape` cut to `layers` layers, added to SHAPES."""
    family, overrides, dtype = SHAPES[shape]
    keys = ("n_layer",) if family == "gpt2" else ("num_hidden_layers", "max_window_layers")
    cut = {**overrides, **{k: layers for k in keys if k in overrides or k == keys[0]}}
    name = f"{shape}-{layers}layers"
    SHAPES[name] = (family, cut, dtype)
    return name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="gpt2", help=f"comma list of {', '.join(SHAPES)}")
    ap.add_argument("--variants", default="none,q4", help=f"comma list of {', '.join(VARIANTS)}")
    ap.add_argument("--stream", choices=["off", "on", "both"], default="both")
    ap.add_argument("--work", help="folder for checkpoints and exports (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the checkpoints (with --work)")
    ap.add_argument(
        "--keep-exports",
        action="store_true",
        help="keep the exported folders too (with --work), e.g. to compare them with another "
        "branch's byte for byte",
    )
    ap.add_argument(
        "--layers",
        type=int,
        help="keep only this many layers of each shape: with 2, a --stream export's layer "
        "check alone (it builds the same 2-layer model a full export's check does)",
    )
    args = ap.parse_args()
    if "tc+q4" in args.variants.split(",") and not CALIB.is_file():
        ap.error(f"tc+q4 calibrates on {CALIB}, which is missing (set TENSORGPT_DATA)")
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.stream]
    shapes = args.shapes.split(",")
    if args.layers:
        shapes = [with_layers(shape, args.layers) for shape in shapes]
    table = []
    with tempfile.TemporaryDirectory(prefix="export-scaling-", dir=args.work) as tmp:
        work = Path(args.work or tmp)
        for shape in shapes:
            ckpt = work / f"ckpt-{shape}"
            need = checkpoint_estimate(shape)
            free = shutil.disk_usage(work).free
            if free < 2.2 * need:  # the checkpoint, plus an fp32-or-smaller export of it
                print(f"{shape}: needs ~{2.2 * need / 1e9:.1f} GB free, {free / 1e9:.1f} GB here")
                continue
            started = time.perf_counter()
            info = existing(ckpt) if args.work else None  # a kept checkpoint is reused
            info = info or write_checkpoint(shape, ckpt)
            print(
                f"{shape}: wrote {info['disk_bytes'] / 1e9:.2f} GB, {info['params'] / 1e9:.3f}B "
                f"params in {time.perf_counter() - started:.0f} s",
                flush=True,
            )
            target = TARGET_BASE + TARGET_PER_LARGEST * info["largest_fp32_bytes"]
            for variant in args.variants.split(","):
                outs = []
                for stream in modes:
                    out = work / f"out-{shape}-{variant}-{'stream' if stream else 'memory'}"
                    extra = ["--stream"] if stream else []
                    row = run_export(ckpt, out, VARIANTS[variant] + extra)
                    row.update(shape=shape, variant=variant, stream=stream)
                    row["target_gb"] = round(target / 1e9, 2)
                    row["within_target"] = row["peak_rss_gb"] is not None and (
                        row["peak_rss_gb"] * 1e9 <= target
                    )
                    row["s_per_billion"] = round(row["seconds"] / (info["params"] / 1e9), 1)
                    outs.append(out)
                    table.append(row)
                    print(json.dumps(row), flush=True)
                if len(outs) == 2 and all((o / "model.onnx").is_file() for o in outs):
                    print(f"{shape} {variant}: same graph and tensors: {same_content(*outs)}")
                for out in [] if args.keep_exports else outs:
                    shutil.rmtree(out, ignore_errors=True)
            if not args.keep:
                shutil.rmtree(ckpt, ignore_errors=True)
    print("\n| shape | variant | stream | peak RSS GB | target GB | s | s per 1B params | load |")
    print("|---|---|---|---|---|---|---|---|")
    for r in table:
        print(
            f"| {r['shape']} | {r['variant']} | {r['stream']} | {r['peak_rss_gb']} | "
            f"{r['target_gb']} | {r['seconds']} | {r['s_per_billion']} | "
            f"{r['load_average'][0]} |"
        )


if __name__ == "__main__":
    main()
