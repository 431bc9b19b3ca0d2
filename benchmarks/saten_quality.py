"""--linears saten against truncated SVD at equal parameters (issue 15), SmolLM2-135M.

Every variant is a real `export_model` (benchmarks/linear_factors.py's variants and folders:
`q4`, `{saten|svd}-{ratio}[-q4]`, table as int8 rows), so the file sizes are whole files and
each export passed its parity check against PyTorch. The perplexity is then computed by the
exported model's PyTorch twin (the same weights the file decodes: q4-decoded cores and factors,
the decoded table) with runtime_demo's own windows and tokenization (text_perplexity: first
--max-tokens tokens, windows of 512), on every domain of tensorgpt.domain_texts. Why not
onnxruntime: Saten's TT-matrix chain at these ranks costs 13x the dense layer's multiply-adds
and its row entries a Gather per call (benchmarks/saten_residual.py: 5-30x slower than dense
per layer for one token, 20-90x for 128), so scoring 16k tokens through the file would take
hours on this machine; the parity check is what ties the two.

    python benchmarks/saten_quality.py --out OUT --domains DOMAINS --max-tokens 4096 \\
        --variants q4 saten-0.9-q4 svd-0.9-q4
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

# a sibling script (benchmarks/ is on sys.path when a benchmark runs as a script)
from linear_factors import DATA, parse_variant

from tensorgpt.export.exporter import export_model
from tensorgpt.export.linears.saten_layer import SatenLinear
from tensorgpt.export.load import LoadedModel, load


class TorchTwin:
    """What runtime_demo.perplexity reads of an ExportedModel, answered by PyTorch."""

    def __init__(self, model, max_positions: int) -> None:
        self.model, self.max_positions = model, max_positions

    def check_token_ids(self, ids) -> None:
        pass

    def empty_past(self, batch: int):
        return None

    def forward(self, ids, mask, positions, past):
        with torch.no_grad():
            out = self.model(input_ids=torch.from_numpy(ids), use_cache=False)
        return out.logits.float().numpy(), None


def densify(model) -> int:
    """Replace every SatenLinear by an nn.Linear holding its W~ (same function, dense speed)."""
    n = 0
    for name, module in list(model.named_modules()):
        if isinstance(module, SatenLinear):
            with torch.no_grad():
                w = module.dense_weight()
            dense = torch.nn.Linear(w.shape[1], w.shape[0], bias=module.bias is not None)
            dense.weight.data = w
            if module.bias is not None:
                dense.bias.data = module.bias.detach().clone()
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, dense)
            n += 1
    return n


def main() -> int:
    from tensorgpt.runtime_demo.perplexity import text_perplexity
    from tensorgpt.runtime_demo.tokenizer import load_tokenizer

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--domains", required=True, help="folder written by tensorgpt.domain_texts")
    p.add_argument("--variants", nargs="+", required=True)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--calib-text", default=os.path.join(DATA, "valid.txt"))
    p.add_argument("--max-tokens", type=int, default=4096)
    args = p.parse_args()
    out = Path(args.out)
    texts = [t for t in sorted(Path(args.domains).glob("*.txt")) if t.name != "SOURCES.txt"]
    loaded = load(args.model)
    positions = loaded.model.config.max_position_embeddings
    rows = []
    for name in args.variants:
        folder = out / name
        result_file = folder / "saten_quality.json"
        if result_file.is_file():
            rows.append(json.loads(result_file.read_text()))
            print(f"[saten_quality] {name}: reusing {result_file}", file=sys.stderr)
            continue
        table, quantize, linears, weights = parse_variant(name, args.calib_text)
        fresh = LoadedModel(
            copy.deepcopy(loaded.model), loaded.tokenizer, loaded.source, loaded.resolved
        )
        started = time.perf_counter()
        manifest = export_model(
            fresh, folder, table, quantize=quantize, linears=linears, weights=weights, force=True
        )
        took = time.perf_counter() - started
        print(
            f"[saten_quality] {name}: exported in {took:.0f} s, load average "
            f"{os.getloadavg()[0]:.2f}",
            file=sys.stderr,
            flush=True,
        )
        densify(fresh.model)
        twin = TorchTwin(fresh.model.eval(), positions)
        ppl = {}
        for t in texts:
            res = text_perplexity(twin, load_tokenizer(folder), str(t), None, None, args.max_tokens)
            ppl[t.stem] = res["perplexity"]
            print(
                f"[saten_quality] {name} {t.stem}: {res['perplexity']:.4g} "
                f"({res['scored']} tokens, load {os.getloadavg()[0]:.2f})",
                file=sys.stderr,
                flush=True,
            )
        lin = manifest.get("linears") or {}
        row = {
            "name": name,
            "file_mb": manifest["bytes"]["file"] / 1e6,  # model.onnx, as linear_factors.py
            "stored_ratio": lin.get("stored_ratio", 1.0),
            "sparse_share": lin.get("sparse_share"),
            "passed": manifest["verification"]["passed"],
            "perplexity": ppl,
            "export_s": round(took),
        }
        result_file.write_text(json.dumps(row, indent=1))
        rows.append(row)
        del fresh
    ref = next((r for r in rows if r["name"] == "q4"), rows[0])
    domains = list(ref["perplexity"])
    head = ["variant", "file MB", "linear params kept", "sparse share", *domains, "worst domain"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in rows:
        change = {d: 100 * (r["perplexity"][d] / ref["perplexity"][d] - 1) for d in domains}
        worst = max(change, key=change.get)
        cells = [r["name"], f"{r['file_mb']:.1f}", f"{r['stored_ratio']:.3f}"]
        cells.append("-" if r["sparse_share"] is None else f"{r['sparse_share']:g}")
        cells += [f"{r['perplexity'][d]:.4g} ({_change(change[d])})" for d in domains]
        cells.append(f"{worst} {_change(change[worst])}")
        print("| " + " | ".join(cells) + " |")
    print(f"\nload average at the end: {'/'.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


def _change(pct: float) -> str:
    return f"{pct:+.1f}%" if pct < 100 else f"x{1 + pct / 100:.3g}"


if __name__ == "__main__":
    np.seterr(all="ignore")
    raise SystemExit(main())
