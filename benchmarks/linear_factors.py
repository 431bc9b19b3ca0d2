"""The transformer's linear layers factored (issue 15): ESPACE and truncated SVD against q4.

SmolLM2-135M (the offline default `smollm2-135m`), loaded once; every variant is a real
`export_model` (the same code as `tensorgpt export`) of a fresh copy of the model into
OUT/<variant>, with the table as int8 rows (`--method int8-rows`: needs no calibration, about
lossless on every domain) so the file sizes are whole files. Then `tensorgpt compare`'s
measurement on every evaluation domain of `tensorgpt.domain_texts` (wikitext-2 test, Python
source, licenses, fortunes; none used for calibration), first --max-tokens tokens each,
windows of 512, worst domain reported. The reference is `--quantize q4` with the table
uncompressed: on this GGUF source q4 recovers every weight exactly, so it is the fp32 model.

ESPACE calibrates on --calib-text (default wikitext-2 *valid*; `generated`: the export's own
default, text the model generates; statistics cached in ~/.cache/tensorgpt/calibration, so
only the first variant of a kind pays for them).

    python benchmarks/linear_factors.py --out /tmp/lf --domains DIR          # default grid
    python benchmarks/linear_factors.py --out /tmp/lf --domains DIR --variants q4 espace-0.75-q4
    python -m tensorgpt.domain_texts DIR --wikitext /path/to/wikitext-2      # writes DIR

A variant name is `q4` (reference), `int8-rows-q4` (the table alone), `int8-rows-q3` (3-bit
blocks, the equal-bytes baseline), `{espace|espace-tn|espace-fisher|svd|saten}-{ratio}[-q4|-q3]`
with an optional `-heal{N}` (`--linear-heal-steps N`), or `[tc-]mixed-{bits}` (`--quantize mixed --weight-bits bits`; with `tc-`: the default tc
table instead of int8 rows). A folder that already holds a finished export is reused.
Prints a Markdown table (--markdown FILE also writes it) and the load average.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

from tensorgpt.compare import SpeedOptions, TextOptions, compare
from tensorgpt.domain_texts import DEFAULT_WIKITEXT
from tensorgpt.export.compress import CompressionSpec
from tensorgpt.export.exporter import export_model
from tensorgpt.export.linears import LinearSpec
from tensorgpt.export.load import LoadedModel, load
from tensorgpt.export.quantizers.base import WeightSpec

DATA = DEFAULT_WIKITEXT
GRID = (
    "q4",
    "int8-rows-q4",
    "espace-0.9-q4",
    "svd-0.9-q4",
    "espace-0.75-q4",
    "svd-0.75-q4",
    "espace-0.75",
)


def parse_variant(
    name: str, calib_text: str
) -> tuple[CompressionSpec, str, LinearSpec, WeightSpec]:
    """(table spec, quantizer, linear spec, weight spec) of a variant name (module docstring)."""
    text = None if calib_text == "generated" else calib_text
    if name == "q4":
        return CompressionSpec(), "q4", LinearSpec(), WeightSpec()
    if name.removeprefix("tc-").startswith("mixed-"):
        table = CompressionSpec(method="tc" if name.startswith("tc-") else "int8-rows")
        bits = float(name.rpartition("-")[2])
        return table, "mixed", LinearSpec(), WeightSpec(bits, text)
    table = CompressionSpec(method="int8-rows")
    if name in ("int8-rows-q4", "int8-rows-q3"):
        return table, name[-2:], LinearSpec(), WeightSpec()
    name, _, heal = name.partition("-heal")
    quantize = name[-2:] if name.endswith(("-q4", "-q3")) else "none"
    method, _, ratio = name.removesuffix(f"-{quantize}").rpartition("-")
    if method not in ("espace", "espace-tn", "espace-fisher", "svd", "saten"):
        raise ValueError(f"variant {name!r}: expected q4, int8-rows-q4 or METHOD-RATIO[-q4]")
    return (
        table,
        quantize,
        LinearSpec(method, float(ratio), None if method == "svd" else text, int(heal or 0)),
        WeightSpec(),
    )


def export_variants(names: list[str], out: Path, calib_text: str, measure, model: str) -> None:
    """Export each variant not yet in `out`, and measure it right away (`measure(folder)`
    caches its perplexities in the folder), so an interrupted run keeps what it finished."""
    loaded = None
    for name in names:
        folder = out / name
        if (folder / "manifest.json").is_file():
            print(f"[linear_factors] {name}: reusing {folder}", file=sys.stderr)
            measure(folder)
            continue
        if loaded is None:
            loaded = load(model)
        table, quantize, linears, weights = parse_variant(name, calib_text)
        # the export changes the model in place (factors, q4 weights, decoded table)
        fresh = LoadedModel(
            copy.deepcopy(loaded.model), loaded.tokenizer, loaded.source, loaded.resolved
        )
        started = time.perf_counter()
        export_model(fresh, folder, table, quantize=quantize, linears=linears, weights=weights)
        print(
            f"[linear_factors] {name}: exported in {time.perf_counter() - started:.0f} s, "
            f"load average {os.getloadavg()[0]:.2f}",
            file=sys.stderr,
        )
        del fresh
        measure(folder)


def _change(pct: float) -> str:
    """+1.2% for small changes, x12.3 once the perplexity has more than doubled."""
    return f"{pct:+.1f}%" if pct < 100 else f"x{1 + pct / 100:.3g}"


def markdown_table(report: dict, out: Path) -> str:
    rows = report["rows"]
    ref = next(r for r in rows if r["name"] == "q4")
    domains = list(ref["perplexity_by_text"])
    timed = rows[0]["decode_ms"] is not None
    head = ["variant", "file MB", "linear params kept"] + domains + ["worst domain"]
    head += ["decode ms/token"] if timed else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        manifest = json.loads((out / r["name"] / "manifest.json").read_text())
        lin = manifest.get("linears")
        kept = f"{lin['stored_ratio']:.3f}" if lin else "1"
        cells = [r["name"], f"{r['file_bytes'] / 1e6:.1f}", kept]
        changes = {}
        for d in domains:
            ppl, base = r["perplexity_by_text"][d], ref["perplexity_by_text"][d]
            changes[d] = 100 * (ppl / base - 1)
            cells.append(f"{ppl:.4g} ({_change(changes[d])})")
        worst = max(changes, key=changes.get)
        cells.append(f"{worst} {_change(changes[worst])}")
        cells += [f"{r['decode_ms']:.1f}"] if timed else []
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="folder for the exports (reused when present)")
    p.add_argument("--domains", required=True, help="folder written by tensorgpt.domain_texts")
    p.add_argument("--variants", nargs="+", default=list(GRID))
    p.add_argument("--model", default="smollm2-135m", help="what `tensorgpt export` takes")
    p.add_argument(
        "--calib-text",
        default=os.path.join(DATA, "valid.txt"),
        help="the calibrated variants' text (ESPACE, mixed), or `generated` (text the model "
        "generates, the export's default)",
    )
    p.add_argument("--max-tokens", type=int, default=8192)
    p.add_argument("--markdown", help="also write the table here")
    p.add_argument(
        "--speed",
        action="store_true",
        help="also time decoding (1 thread, interleaved rounds, best round; load printed)",
    )
    args = p.parse_args()
    if "q4" not in args.variants:
        raise SystemExit("the variants must include q4 (the reference)")
    out = Path(args.out)
    texts = [t for t in sorted(Path(args.domains).glob("*.txt")) if t.name != "SOURCES.txt"]
    if not texts:
        raise SystemExit(f"no domain texts in {args.domains}: run python -m tensorgpt.domain_texts")
    options = [TextOptions(str(t), args.max_tokens) for t in texts]

    def log(message: str) -> None:
        print(f"[compare] {message} (load {os.getloadavg()[0]:.2f})", file=sys.stderr, flush=True)

    export_variants(
        args.variants,
        out,
        args.calib_text,
        lambda f: compare([f], options, speed=None, log=log),
        args.model,
    )
    report = compare(
        [out / v for v in args.variants],
        options,
        speed=SpeedOptions(threads=1) if args.speed else None,
        log=log,
    )
    markdown = markdown_table(report, out)
    machine = report.get("speed") or {}
    note = (
        f"\nFirst {args.max_tokens} tokens per domain, windows of 512; change against `q4` "
        f"(= fp32 on this source). Load average at the end: {os.getloadavg()[0]:.2f}"
        + (
            f"; decode timed with 1 thread, 1-min load {machine['load_average_1min']:.2f} "
            "when timing started"
            if args.speed
            else ""
        )
        + ".\n"
    )
    print(markdown + note)
    if args.markdown:
        Path(args.markdown).write_text(markdown + note, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
