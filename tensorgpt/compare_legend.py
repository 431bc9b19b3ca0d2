"""What a comparison table means, and which file it says to ship (tensorgpt/compare_table.py).

The table is read by people who did not write it: every column it shows gets one line of
legend, the timing gets the machine it ran on (runtime_demo/machine.py), and the last line
names one variant by a stated rule, so the reader knows what to do with the numbers.
"""

from __future__ import annotations

import math
from pathlib import Path

from tensorgpt.compare_table import KEEPS_QUALITY_PCT, fmt_ppl, table_cells, times_smaller
from tensorgpt.runtime_demo.machine import Machine

# One line per column header of compare.COLUMNS; {...} fields are filled from the report.
COLUMN_LEGEND = {
    "variant": "the export folder's name",
    "method": "how the token-embedding table is stored (`tt r4`: per-token Tensor-Train, rank 4)",
    "quantize": "how the transformer's own weights are stored (none = fp32, q4 = 4-bit blocks)",
    "file MB": "model.onnx (+ model.onnx.data), 10^6 bytes: the model file itself",
    "folder MB": "the whole folder a device needs (model.onnx, decode.onnx + body.onnx, "
    "tokenizer, manifest), 10^6 bytes",
    "file x": "how many times smaller model.onnx is than `{baseline}`'s",
    "emb MB": "bytes stored for the token-embedding table, 10^6 bytes",
    "emb x": "dense fp32 table bytes / stored table bytes (how much the table shrank)",
    "MAE": "mean absolute error of the decoded table against the original",
    "norm-MAE": "MAE / (max - min) of the original table",
    "rel err": "relative Frobenius error of the decoded table, ||X - Y|| / ||X||",
    "ppl": "perplexity on {text} (lower is better)",
    "ppl change": "perplexity against `{baseline}`'s (negative = better)",
    "ms/token": "median time of one batch-1 greedy decode step ({threads} threads), best of "
    "{rounds} interleaved rounds",
    "load peak MB": "peak resident memory while the session loads (lowest over the rounds)",
    "front": "yes = on the size/perplexity Pareto front: no other variant is both smaller and "
    "lower in perplexity",
}


def _text_label(report: dict) -> str:
    text = report["text"]
    if text is None:
        return "-"
    tokens = next((r.get("tokens_scored") for r in report["rows"] if r.get("tokens_scored")), None)
    scored = f", {tokens} tokens scored" if tokens else ""
    return (
        f"{Path(text['path']).name}, first {text['max_tokens'] or 'all'} tokens, window "
        f"{text['window'] or 512}{scored}"
    )


def legend(report: dict) -> list[str]:
    """One line per column the table shows, in the table's order."""
    headers, _ = table_cells(report)
    speed = report["speed"] or {}
    fields = {
        "baseline": report["baseline"],
        "text": _text_label(report),
        "threads": speed.get("threads") or "onnxruntime's default",
        "rounds": speed.get("rounds", 1),
    }
    width = max(len(h) for h in headers)
    return [f"{h.ljust(width)}  {COLUMN_LEGEND[h].format(**fields)}" for h in headers]


def machine_line(report: dict) -> str | None:
    """The cores and load the timings ran with (and a warning if busy); None if untimed."""
    speed = report["speed"]
    if speed is None:
        return None
    return Machine(speed["cpus"], speed.get("load_average_1min")).describe()


def conclusion(report: dict) -> str:
    """Which file to ship. Rule: the smallest model.onnx whose perplexity is within
    KEEPS_QUALITY_PCT above the uncompressed variant's (the best measured one's without it)."""
    rows = [
        r for r in report["rows"] if r["perplexity"] is not None and math.isfinite(r["perplexity"])
    ]
    if not rows:
        return "Conclusion: no perplexity measured (give --text), so no file can be recommended."
    base = next((r for r in rows if r["name"] == report["baseline"]), None)
    reference = base or min(rows, key=lambda r: r["perplexity"])
    limit = reference["perplexity"] * (1 + KEEPS_QUALITY_PCT / 100)
    pick = min((r for r in rows if r["perplexity"] <= limit), key=lambda r: r["file_bytes"])
    change = 100 * (pick["perplexity"] / reference["perplexity"] - 1)
    against = "the uncompressed" if base else "the best measured"
    size = f"{pick['file_bytes'] / 1e6:.1f} MB"
    if pick is not reference:
        size += f", {times_smaller(reference['file_bytes'] / pick['file_bytes'])}"
    return (
        f"Conclusion: ship `{pick['name']}` ({size}, perplexity {fmt_ppl(pick['perplexity'])}, "
        f"{change:+.1f}%): the smallest file whose perplexity is at most {KEEPS_QUALITY_PCT:g}% "
        f"above {against} variant's (`{reference['name']}`)."
    )


def explanation(report: dict) -> list[str]:
    """What the terminal prints under the table: legend, machine, conclusion."""
    lines = ["", "Columns:", *(f"  {line}" for line in legend(report))]
    machine = machine_line(report)
    if machine:
        lines += ["", machine]
    return [*lines, "", conclusion(report)]
