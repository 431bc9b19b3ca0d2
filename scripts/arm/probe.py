"""The computation scripts/arm_check.sh runs on the host and under aarch64 emulation, and the
comparison of the two results.

    probe.py run EXPORT_DIR --out PREFIX [--prompt TEXT] [--new-tokens N] [--text FILE]
    probe.py selftest DIR --out PREFIX        (DIR from make_selftest.py: a plain ONNX graph)
    probe.py exact-grid EXPORT_DIR OUT_DIR    (host only: needs onnx)
    probe.py compare HOST_PREFIX ARM_PREFIX [--reference REF_PREFIX] [--logit-tol X] [--ppl-rtol X]

`run` and `selftest` write PREFIX.json (tokens, perplexity, versions, timings) and PREFIX.npz
(the logits). They import only what a device has: the standard library, numpy, onnxruntime,
tokenizers and tensorgpt.runtime_demo (the base install, no torch, no onnx).

Tolerance rule for files whose kernels may choose their precision (a `--runtime packed` file
with MatMulNBits at accuracy_level 4): level 4 *allows* int8 activations, it does not require
them. x86-64 has an int8 kernel for the 8-bit head and uses it; an aarch64 CPU without one
(cortex-a72) computes the same node with fp32 activations, i.e. the exact-grid function
(measured on the tiny Llama: the emulated cortex-a72 run equals the host's all-level-1 copy
within 4.4e-6 and differs from the host's shipped run by that run's own 0.023 level effect;
an emulated cortex-a76, which has int8 dot products, equals the host's shipped run within
1.1e-5 and is 0.023 from the exact grid; docs/device.md). So
`exact-grid` writes the file's all-level-1 copy, the host runs it as REF, and `compare
--reference REF` holds the aarch64 run to the exact grid, allowing it the host's own
deviation from it: |arm - ref| <= logit_tol + max|host - ref| (and likewise the perplexity).
The rule adds no freedom a correct file does not use on the host, and a wrong aarch64 result
(another kernel bug, a wrong weight) still fails. Greedy tokens must be identical to the
host's, or, with a reference, to the reference's: those are the file's two correct
computations (int8 activations, fp32 activations), and on a real model whose body runs at
level 4 they part after a few steps (SmolLM2-135M q4-packed: step 5 of 8, docs/device.md);
tokens equal to neither fail.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import platform
import sys
import time
from pathlib import Path

FORMAT = "tensorgpt-arm-probe/1"


def _ids_digest(ids: list[int]) -> str:
    return hashlib.sha256(json.dumps(ids).encode()).hexdigest()[:16]


def _environment() -> dict:
    import numpy
    import onnxruntime
    import tokenizers

    return {
        "machine": platform.machine(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "onnxruntime": onnxruntime.__version__,
        "tokenizers": tokenizers.__version__,
    }


def _write(prefix: str, summary: dict, arrays: dict) -> None:
    import numpy as np

    Path(prefix + ".json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    np.savez(prefix + ".npz", **arrays)


# ---------------------------------------------------------------- run: an exported folder


def probe_export(args: argparse.Namespace) -> None:
    """Greedy generation (the logits of every step) and a perplexity evaluation, both through
    tensorgpt.runtime_demo's Python API: the code `tensorgpt run` / `tensorgpt eval` use."""
    import numpy as np

    from tensorgpt.runtime_demo.generate import generate
    from tensorgpt.runtime_demo.perplexity import perplexity
    from tensorgpt.runtime_demo.session import ExportedModel
    from tensorgpt.runtime_demo.tokenizer import decode, encode, load_tokenizer

    start = time.perf_counter()
    model = ExportedModel(args.folder, threads=args.threads)
    tokenizer = load_tokenizer(model.folder)
    load_seconds = time.perf_counter() - start

    # Record the logits each generation step picks its token from (the KV-cache path).
    step_logits: list[np.ndarray] = []
    forward = model.forward

    def recording_forward(*forward_args, **forward_kwargs):
        logits, present = forward(*forward_args, **forward_kwargs)
        step_logits.append(np.array(logits[0, -1, :], dtype=np.float32))
        return logits, present

    model.forward = recording_forward  # type: ignore[method-assign]
    prompt_ids = encode(tokenizer, args.prompt)
    start = time.perf_counter()
    # No EOS stop: both sides generate exactly --new-tokens, so there is more to compare.
    ids = list(generate(model, prompt_ids, args.new_tokens, eos_token_ids=()))
    generate_seconds = time.perf_counter() - start
    model.forward = forward  # type: ignore[method-assign]

    text = Path(args.text).read_text(encoding="utf-8")
    text_ids = encode(tokenizer, text, add_special_tokens=False)
    window = min(args.window, model.max_positions)
    start = time.perf_counter()
    ppl = perplexity(model, text_ids, window=window, max_tokens=args.max_tokens)
    ppl_seconds = time.perf_counter() - start

    summary = {
        "format": FORMAT,
        "kind": "export",
        "env": _environment(),
        "tensorgpt": str(Path(sys.modules["tensorgpt"].__file__).parent),
        "folder": str(model.folder),
        "method": model.manifest.method,
        "load_mode": model.load_mode,  # "split": decode.onnx + body.onnx, else model.onnx
        "prompt": args.prompt,
        "prompt_ids": prompt_ids,
        "tokens": ids,
        "text": decode(tokenizer, ids),
        "eval_ids_sha256": _ids_digest(text_ids[: ppl["tokens"]]),
        "perplexity": ppl["perplexity"],
        "perplexity_detail": ppl,
        "seconds": {"load": load_seconds, "generate": generate_seconds, "perplexity": ppl_seconds},
        "tokens_per_second": {
            "generate": len(ids) / generate_seconds,
            "perplexity": ppl["tokens"] / ppl_seconds,
        },
    }
    _write(args.out, summary, {"logits": np.stack(step_logits)})


# ---------------------------------------------------------------- selftest: a plain ONNX graph


def probe_selftest(args: argparse.Namespace) -> None:
    """The userland alone: tokenizers + onnxruntime + numpy on a small graph (make_selftest.py)
    that maps token ids to next-token logits. Greedy tokens = argmax per position, perplexity
    = exp(mean NLL of each next token), so `compare` reads it like an export's result."""
    import numpy as np
    import onnxruntime as ort
    from tokenizers import Tokenizer

    folder = Path(args.folder)
    start = time.perf_counter()
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    load_seconds = time.perf_counter() - start
    text = (folder / "text.txt").read_text(encoding="utf-8")
    ids = tokenizer.encode(text).ids
    start = time.perf_counter()
    logits = session.run(["logits"], {"input_ids": np.asarray([ids], dtype=np.int64)})[0][0]
    run_seconds = time.perf_counter() - start
    scores = logits[:-1].astype(np.float64)
    top = scores.max(axis=-1)
    log_norm = top + np.log(np.exp(scores - top[:, None]).sum(axis=-1))
    nll = float((log_norm - scores[np.arange(len(scores)), ids[1:]]).mean())
    tokens = [int(t) for t in logits.argmax(axis=-1)]
    summary = {
        "format": FORMAT,
        "kind": "selftest",
        "env": _environment(),
        "prompt_ids": ids,
        "tokens": tokens,
        "text": tokenizer.decode(tokens),
        "eval_ids_sha256": _ids_digest(ids),
        "perplexity": math.exp(nll),
        "seconds": {"load": load_seconds, "run": run_seconds},
        "tokens_per_second": {"perplexity": len(ids) / run_seconds},
    }
    _write(args.out, summary, {"logits": logits.astype(np.float32)})


# ---------------------------------------------------------------- compare


def _short(tokens: list[int], keep: int = 24) -> str:
    return str(tokens) if len(tokens) <= keep else f"{tokens[:keep]} ... ({len(tokens)} tokens)"


def _load(prefix: str) -> tuple[dict, object]:
    import numpy as np

    summary = json.loads(Path(prefix + ".json").read_text(encoding="utf-8"))
    return summary, np.load(prefix + ".npz")["logits"].astype(np.float64)


def _common_prefix(*token_lists: list[int]) -> int:
    """Steps before the first position where the lists disagree (or the shortest ends)."""
    steps = min(len(t) for t in token_lists)
    return next((i for i in range(steps) if len({t[i] for t in token_lists}) > 1), steps)


def exact_grid(args: argparse.Namespace) -> int:
    """Host only: write the exact-grid (all accuracy_level 1) copy; exit 4 if the file has no
    node above level 1 (then there is nothing to copy and no reference is needed)."""
    from tensorgpt.export.packed.verify import write_exact_grid_copy

    return 0 if write_exact_grid_copy(Path(args.folder), Path(args.out)) else 4


def reference_tolerances(
    host: dict, host_logits, ref: dict, ref_logits, logit_tol: float, ppl_rtol: float
) -> tuple[float, float, float, float]:
    """(logit tolerance, perplexity tolerance, host's max |logit diff| to ref, its perplexity
    relative diff) under the rule of the module docstring, over the steps where host and ref
    pick the same tokens (past a divergence their logits come from different inputs)."""
    import numpy as np

    steps = min(
        _common_prefix(host["tokens"], ref["tokens"]) + 1, len(host_logits), len(ref_logits)
    )
    level_effect = float(np.abs(host_logits[:steps] - ref_logits[:steps]).max())
    ppl_effect = abs(host["perplexity"] - ref["perplexity"]) / abs(ref["perplexity"])
    return logit_tol + level_effect, ppl_rtol + ppl_effect, level_effect, ppl_effect


def compare(args: argparse.Namespace) -> int:
    """Print both sides and return 0 when tokens, logits and perplexity agree, else 1."""
    import numpy as np

    host, host_logits = _load(args.host)
    arm, arm_logits = _load(args.arm)
    # Without a reference the aarch64 run is held to the host's; with one (a file whose
    # kernels may pick their precision), to the exact grid within the host's own deviation.
    target, target_logits = host, host_logits
    logit_tol, ppl_rtol = args.logit_tol, args.ppl_rtol
    if args.reference:
        target, target_logits = _load(args.reference)
        logit_tol, ppl_rtol, level_effect, ppl_effect = reference_tolerances(
            host, host_logits, target, target_logits, args.logit_tol, args.ppl_rtol
        )

    checks: list[tuple[str, bool, str]] = []
    checks.append(
        (
            "tokenizer",
            host["prompt_ids"] == arm["prompt_ids"]
            and host["eval_ids_sha256"] == arm["eval_ids_sha256"],
            f"prompt {len(host['prompt_ids'])} ids, eval text ids {host['eval_ids_sha256']} "
            f"vs {arm['eval_ids_sha256']}",
        )
    )
    same_tokens = host["tokens"] == arm["tokens"]
    reference_tokens = bool(args.reference) and target["tokens"] == arm["tokens"]
    first_diff = _common_prefix(host["tokens"], arm["tokens"])
    if same_tokens:
        detail = f"{len(host['tokens'])} tokens identical"
    elif reference_tokens:
        detail = (
            f"{len(arm['tokens'])} tokens identical to the exact-grid reference's (fp32 "
            f"activations; the host's int8 run parts from both at token {first_diff})"
        )
    else:
        detail = f"differ from token {first_diff} on"
    tokens_ok = same_tokens or reference_tokens
    checks.append(("greedy tokens", tokens_ok, detail))
    # Logits past a token divergence come from different inputs: compare the common prefix.
    steps = min(
        len(target_logits),
        len(arm_logits),
        _common_prefix(target["tokens"], arm["tokens"]) + 1,
    )
    against = "exact-grid reference" if args.reference else "host"
    if target_logits.shape[1:] != arm_logits.shape[1:] or steps == 0:
        checks.append(("logits", False, f"shapes {target_logits.shape} vs {arm_logits.shape}"))
        max_diff = float("nan")
    else:
        max_diff = float(np.abs(target_logits[:steps] - arm_logits[:steps]).max())
        checks.append(
            (
                "logits",
                bool(max_diff <= logit_tol),
                f"max |diff| to the {against} {max_diff:.3g} over {steps} x "
                f"{target_logits.shape[-1]} (tolerance {logit_tol:.3g})",
            )
        )
    rel = abs(target["perplexity"] - arm["perplexity"]) / abs(target["perplexity"])
    checks.append(
        (
            "perplexity",
            bool(rel <= ppl_rtol),
            f"relative diff to the {against} {rel:.3g} (tolerance {ppl_rtol:.3g})",
        )
    )

    def row(name: str, a: object, b: object) -> None:
        print(f"  {name:18s} {str(a):28s} {b}")

    print()
    print(f"tensorgpt arm check ({host['kind']}): {host.get('folder', '')}")
    row("", f"host ({host['env']['machine']})", f"{arm['env']['machine']} (qemu emulation)")
    for key in ("python", "numpy", "onnxruntime", "tokenizers"):
        row(key, host["env"][key], arm["env"][key])
    row("greedy tokens", "", "")
    print(f"    host: {_short(host['tokens'])}")
    print(f"    arm:  {_short(arm['tokens'])}")
    if host["kind"] == "export":
        print(f"    text: {host['text']!r}")
        row("load", host.get("load_mode"), arm.get("load_mode"))
    row("perplexity", f"{host['perplexity']:.6f}", f"{arm['perplexity']:.6f}")
    if args.reference:
        print(
            f"  exact-grid reference (host, every MatMulNBits at accuracy_level 1): perplexity "
            f"{target['perplexity']:.6f}; the host's shipped levels move the logits by up to "
            f"{level_effect:.3g} and the perplexity by {ppl_effect:.3g} (relative): the "
            f"tolerances are {args.logit_tol:g} and {args.ppl_rtol:g} plus these"
        )
    for key in host["tokens_per_second"]:
        row(
            f"tokens/s {key}",
            f"{host['tokens_per_second'][key]:.1f}",
            f"{arm['tokens_per_second'][key]:.1f} (emulated, not device speed)",
        )
    print()
    for name, ok, detail in checks:
        print(f"  {'OK      ' if ok else 'MISMATCH'} {name:14s} {detail}")
    passed = all(ok for _, ok, _ in checks)
    print()
    print(
        "arm check PASSED" if passed else "arm check FAILED: aarch64 results differ from the host"
    )
    both = min(first_diff + 1, len(host_logits), len(arm_logits))
    host_arm_diff = (
        float(np.abs(host_logits[:both] - arm_logits[:both]).max())
        if host_logits.shape[1:] == arm_logits.shape[1:] and both
        else float("nan")
    )
    summary = {
        "passed": passed,
        "tokens_match": tokens_ok,
        "tokens_match_host": same_tokens,
        "compared_with": "exact_grid" if args.reference else "host",
        "max_abs_logit_diff": max_diff,
        "logit_tolerance": logit_tol,
        "host_arm_max_abs_logit_diff": host_arm_diff,
        "perplexity_rtol": ppl_rtol,
        "perplexity_host": host["perplexity"],
        "perplexity_reference": target["perplexity"] if args.reference else None,
        "perplexity_arm": arm["perplexity"],
        "perplexity_rel_diff": rel,
        "tokens_per_second_host": host["tokens_per_second"],
        "tokens_per_second_arm": arm["tokens_per_second"],
        "load_mode": [host.get("load_mode"), arm.get("load_mode")],
    }
    print("ARM_CHECK_RESULT " + json.dumps(summary))
    return 0 if passed else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="greedy generation + perplexity of an exported folder")
    run.add_argument("folder")
    run.add_argument("--out", required=True, help="output prefix (PREFIX.json, PREFIX.npz)")
    run.add_argument("--prompt", default="The capital of France is")
    run.add_argument("--new-tokens", type=int, default=16)
    run.add_argument("--text", required=True, help="UTF-8 text for the perplexity")
    run.add_argument("--window", type=int, default=256)
    run.add_argument("--max-tokens", type=int, default=1024)
    run.add_argument("--threads", type=int, default=None)
    selftest = sub.add_parser("selftest", help="a plain ONNX graph from make_selftest.py")
    selftest.add_argument("folder")
    selftest.add_argument("--out", required=True)
    cmp = sub.add_parser("compare", help="compare a host and an aarch64 result")
    cmp.add_argument("host")
    cmp.add_argument("arm")
    cmp.add_argument("--reference", help="host run of the exact-grid copy (module docstring)")
    cmp.add_argument("--logit-tol", type=float, default=1e-3)
    cmp.add_argument("--ppl-rtol", type=float, default=1e-4)
    grid = sub.add_parser("exact-grid", help="host only: the all-level-1 copy of an export")
    grid.add_argument("folder")
    grid.add_argument("out")
    args = parser.parse_args(argv)
    if args.command == "compare":
        return compare(args)
    if args.command == "exact-grid":
        return exact_grid(args)
    (probe_export if args.command == "run" else probe_selftest)(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
