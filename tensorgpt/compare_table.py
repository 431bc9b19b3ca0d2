"""A comparison report (tensorgpt/compare.py) as text: the table, how it was measured, and
plain sentences saying which variants keep quality.

Pure formatting over the report dict: nothing here measures or reads a folder.
"""

from __future__ import annotations

from pathlib import Path

from tensorgpt.runtime_demo.machine import threads_label

# Perplexity changes within this many percent are reported as "keeps quality".
KEEPS_QUALITY_PCT = 1.0
SMALL_LOSS_PCT = 10.0


def domain_lines(report: dict) -> list[str]:
    """With several texts: one line per variant, every domain's change and the worst."""
    if len(report.get("texts") or []) < 2:
        return []
    lines = ["Perplexity change per domain (worst first in `ppl change`):"]
    for r in report["rows"]:
        by = r.get("ppl_change_by_text")
        if not by:
            continue
        cells = ", ".join(f"{n} {_fmt_pct(v)}" for n, v in by.items())
        lines.append(
            f"{r['name']}: {cells}; worst {r['worst_text']} {_fmt_pct(by[r['worst_text']])}"
        )
    return lines


COLUMNS = (
    # (header, row -> text); MB are 10^6 bytes, as `ls -l --si` and the manifest summary show
    ("variant", lambda r: r["name"]),
    ("method", lambda r: _method_label(r)),
    ("quantize", lambda r: r["quantize"]),
    ("file MB", lambda r: f"{r['file_bytes'] / 1e6:.1f}"),
    ("folder MB", lambda r: _fmt(_mb(r.get("folder_bytes")), "{:.1f}")),
    ("file x", lambda r: _fmt(r["file_ratio"], "{:.2f}x")),
    ("emb MB", lambda r: _fmt(_mb(r["embedding_bytes"]), "{:.2f}")),
    ("emb x", lambda r: _fmt(r["embedding_ratio"], "{:.2f}x")),
    ("MAE", lambda r: _fmt(r["mae"], "{:.2e}")),
    ("norm-MAE", lambda r: _fmt(r["norm_mae"], "{:.2e}")),
    ("rel err", lambda r: _fmt(r["rel_error"], "{:.3f}")),
    ("ppl", lambda r: fmt_ppl(r["perplexity"])),
    ("ppl change", lambda r: _fmt_pct(r["ppl_change_pct"])),
    (
        "ms/token",
        lambda r: _fmt(r["decode_ms"], "{:.1f}" if (r["decode_ms"] or 0) >= 10 else "{:.2f}"),
    ),
    ("load peak MB", lambda r: _fmt(r["load_peak_mb"], "{:.0f}")),
    ("front", lambda r: {True: "yes", False: "", None: "-"}[r["pareto"]]),
)


def _method_label(row: dict) -> str:
    rank = row["method_options"].get("rank")
    return row["method"] + (f" r{rank}" if rank is not None else "")


def _mb(value: int | None) -> float | None:
    return None if value is None else value / 1e6


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else spec.format(value)


def fmt_ppl(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if value < 1000 else f"{value:.3g}"


def _fmt_pct(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:+.1f}%" if abs(value) < 1e4 else f"{value:+.2g}%"


def table_cells(report: dict) -> tuple[list[str], list[list[str]]]:
    columns = [c for c in COLUMNS if _column_has_data(c[0], report)]
    return [h for h, _ in columns], [[f(r) for _, f in columns] for r in report["rows"]]


def _column_has_data(header: str, report: dict) -> bool:
    """Leave out what was not measured (sizes-only, no timing) instead of columns of dashes."""
    if header in ("ppl", "ppl change", "front"):
        return report["text"] is not None
    if header == "ms/token":
        return report["speed"] is not None
    if header == "load peak MB":
        return any(r.get("load_peak_mb") is not None for r in report["rows"])
    if header in ("file x",):
        return report["baseline"] is not None
    return True


def format_table(report: dict) -> str:
    """A fixed-width table for the terminal."""
    headers, body = table_cells(report)
    widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(headers)]
    left = {"variant", "method", "quantize", "front"}
    lines = []
    for cells in (headers, *body):
        lines.append(
            "  ".join(
                c.ljust(w) if h in left else c.rjust(w) for c, w, h in zip(cells, widths, headers)
            ).rstrip()
        )
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(report: dict) -> str:
    headers, body = table_cells(report)
    right = {"variant", "method", "quantize", "front"}
    align = ["---" if h in right else "---:" for h in headers]
    rows = [headers, align, *body]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in rows)


def describe_setup(report: dict) -> list[str]:
    """What was measured and how, one line per kind, so the table can be reproduced."""
    lines = []
    text = report["text"]
    if text is not None:
        scored = next(
            (r.get("tokens_scored") for r in report["rows"] if r.get("tokens_scored")), None
        )
        lines.append(
            f"Perplexity: `{Path(text['path']).name}` (sha256 {text['sha256'][:12]}), "
            f"first {text['max_tokens'] or 'all'} tokens, window {text['window'] or 'default'}, "
            f"stride {text['stride'] or '= window'}, no BOS"
            + (f", {scored} scored tokens" if scored else "")
            + " (runtime_demo.perplexity)."
        )
    speed = report["speed"]
    if speed is not None:
        lines.append(
            f"ms/token: batch 1, median over {speed['repeats']} x {speed['decode_tokens']} "
            f"greedy decode steps after a {speed['prompt_tokens']}-token prompt, onnxruntime "
            f"CPU, {threads_label(speed['threads'])} threads; all variants timed in the same "
            f"run, in {speed.get('rounds', 1)} interleaved rounds, best round kept"
            + (
                f" (machine: {speed['cpus']} cores, 1-min load average "
                f"{speed['load_average_1min']} when timing started)."
                if speed.get("load_average_1min") is not None
                else "."
            )
        )
        if any(r.get("load_peak_mb") is not None for r in report["rows"]):
            lines.append(
                "load peak MB: resident memory of the timing process at its highest while the "
                "variant's session loads (high-water mark reset just before; lowest over the "
                "rounds), the Python process itself included; decode.onnx + body.onnx are used "
                "where the export wrote them."
            )
    lines.append(
        "Sizes: model.onnx bytes (MB = 10^6 bytes); `folder MB`: the whole folder a device "
        "needs (model.onnx, decode.onnx + body.onnx, tokenizer, manifest). `emb x`: dense fp32 table bytes / stored "
        "embedding bytes. MAE, norm-MAE (MAE / value range), rel err (relative Frobenius): "
        "the decoded table against the original."
    )
    if report["baseline"]:
        if report["text"] is None:
            lines.append(f"`file x` is against `{report['baseline']}` (uncompressed fp32).")
        else:
            lines.append(
                f"`file x` and `ppl change` are against `{report['baseline']}` (uncompressed "
                "fp32); `front`: on the size/perplexity Pareto front (no other variant is both "
                "smaller and better)."
            )
    return lines


def quality_summary(report: dict) -> list[str]:
    """Plain sentences, from the numbers, saying which variants lose quality and by how much."""
    rows = [r for r in report["rows"] if r["ppl_change_pct"] is not None]
    base = next((r for r in report["rows"] if r["name"] == report["baseline"]), None)
    if base is None or base["perplexity"] is None:
        return []
    lines = [
        f"Uncompressed (`{base['name']}`): perplexity {fmt_ppl(base['perplexity'])}. "
        "Below: perplexity (change; embedding table and file size against it)."
    ]
    others = sorted((r for r in rows if r is not base), key=lambda r: r["ppl_change_pct"])
    groups = (
        ("Lower perplexity than uncompressed", lambda p: p < -KEEPS_QUALITY_PCT),
        (f"Keep quality (within {KEEPS_QUALITY_PCT:g}%)", lambda p: abs(p) <= KEEPS_QUALITY_PCT),
        (
            f"Lose a little ({KEEPS_QUALITY_PCT:g}-{SMALL_LOSS_PCT:g}% higher perplexity)",
            lambda p: KEEPS_QUALITY_PCT < p <= SMALL_LOSS_PCT,
        ),
        (
            f"Lose quality ({SMALL_LOSS_PCT:g}% higher perplexity up to 2x)",
            lambda p: SMALL_LOSS_PCT < p <= 100.0,
        ),
        ("Break the model (perplexity more than doubles)", lambda p: p > 100.0),
    )
    for title, test in groups:
        members = [r for r in others if test(r["ppl_change_pct"])]
        if members:
            lines.append(f"{title}: " + "; ".join(_summary_item(r) for r in members) + ".")
    front = [r["name"] for r in report["rows"] if r["pareto"]]
    if front:
        lines.append(
            "Pareto front (size vs perplexity): " + ", ".join(f"`{n}`" for n in front) + "."
        )
    return lines


def _summary_item(row: dict) -> str:
    change = row["ppl_change_pct"]
    # Past doubling a factor reads better than "+1.3e+07%".
    change_text = _fmt_pct(change) if change <= 100.0 else f"{1 + change / 100:.3g}x"
    parts = [change_text]
    if row["embedding_ratio"] is not None:
        parts.append(f"table {times_smaller(row['embedding_ratio'])}")
    size = f"file {row['file_bytes'] / 1e6:.3g} MB"
    if row["file_ratio"] is not None:
        size += f", {times_smaller(row['file_ratio'])}"
    parts.append(size)
    return f"`{row['name']}` {fmt_ppl(row['perplexity'])} ({'; '.join(parts)})"


def times_smaller(ratio: float) -> str:
    """A size ratio (old / new) in words: 0.56 is "1.79x larger", not "0.56x smaller"."""
    if round(ratio, 2) == 1.0:
        return "same size"
    return f"{ratio:.2f}x smaller" if ratio > 1 else f"{1 / ratio:.2f}x larger"


def to_markdown(report: dict, title: str | None = None) -> str:
    lines = [f"## {title}", ""] if title else []
    lines += [f"- {line}" for line in describe_setup(report)]
    lines += ["", markdown_table(report), ""]
    domains = domain_lines(report)
    if domains:
        lines += [domains[0], ""] + [f"- {d}" for d in domains[1:]] + [""]
    summary = quality_summary(report)
    if summary:
        lines += [f"- {s}" for s in summary] + [""]
    return "\n".join(lines)
