"""Say, per weight, whether `--quantize q4` kept the source's grid or re-rounded it.

For a GGUF source the manifest's `weight_quantization` gains `source_types` (how many of the
file's tensors are Q4_0, Q4_1, Q4_K, Q6_K, ...) and `tensors`: per PyTorch parameter, the
share of its 32-weight blocks reproduced bit for bit (tt_ops/q4_grid.py) and the relative RMS
error of the rest. Q4_0/Q4_1 blocks come out exact; other source types are re-rounded and the
export logs one line per such tensor with its error.
"""

from __future__ import annotations

from collections import Counter


def gguf_tensor_types(path: str) -> dict[str, int]:
    """{ggml type name: tensor count} of a GGUF file (reads the header only)."""
    from gguf import GGUFReader

    reader = GGUFReader(path)
    return dict(sorted(Counter(t.tensor_type.name for t in reader.tensors).items()))


def name_tensors(report: dict, matched: dict[str, str]) -> None:
    """Re-key report["tensors"] from content hashes to parameter names (in place)."""
    by_key = report["tensors"]
    report["tensors"] = {name: by_key[key] for name, key in sorted(matched.items())}


def describe_source(report: dict, source: str, log) -> None:
    """Add the GGUF source's tensor types to the report and log the re-rounded tensors."""
    report["source_is_gguf"] = source.endswith(".gguf")
    if report["source_is_gguf"]:
        report["source_types"] = gguf_tensor_types(source)
    for line in rerounded_lines(report):
        log(line)


def rerounded_lines(report: dict) -> list[str]:
    """One log line per re-rounded tensor of a GGUF source (an fp32 source is always
    re-rounded: one summary line there)."""
    tensors, fmt = report["tensors"], report.get("format", "q4")
    if fmt == "mixed":  # the 3-bit ones are meant to leave the grid: only the q4 ones count
        tensors = {n: t for n, t in tensors.items() if t.get("format") == "q4"}
        fmt = "mixed, q4 matrices"
    off = {n: t for n, t in tensors.items() if t["exact_blocks"] < 1}
    if not report.get("source_is_gguf"):
        if not off:
            return []
        worst = max(t["rel_rms_error"] for t in off.values())
        return [f"{fmt}: {len(off)} matrices rounded to the grid, worst rel RMS error {worst:.2e}"]
    return [
        f"{fmt}: {name} re-rounded ({1 - t['exact_blocks']:.1%} of blocks not on a 4-bit source "
        f"grid), rel RMS error {t['rel_rms_error']:.2e}"
        for name, t in off.items()
    ]
