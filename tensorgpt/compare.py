"""Exported folders side by side: bytes, table errors, perplexity and decode speed.

This module measures and returns a report (a dict); tensorgpt/compare_table.py prints it as a
terminal or markdown table with its setup lines and plain-sentence summary.

Facts about bytes and reconstruction errors come from each folder's manifest.json; perplexity
(runtime_demo.perplexity) and decode latency (runtime_demo.bench) are measured here, with
onnxruntime only (no torch: this module runs on the device).

Perplexity is the slow part (minutes per SmolLM2-size variant), so it is cached in the folder
(`.tensorgpt-measurements.json`), keyed by model.onnx's size and mtime, the sha256 of
manifest.json and tokenizer.json (a swapped tokenizer scores another tokenization), the text
and its options; a cached number is still only reused after the folder's files pass the
integrity check (runtime_demo/integrity.py). Re-running a comparison only re-measures speed. Speed is never taken from the cache: decode
latencies only compare when all variants are timed in the same run, on the same machine load.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tensorgpt.common.contract import (
    MANIFEST_FILE,
    MODEL_FILE,
    TOKENIZER_FILE,
    Manifest,
)
from tensorgpt.common.files import (
    folder_bytes,
    model_file_bytes,
    sha256_file,
    write_atomic,
)
from tensorgpt.runtime_demo.machine import load_average, usable_cores
from tensorgpt.runtime_demo.manifest import load_manifest

# The cache's file and how it is read live with the runtime, which reads it too (`run` warns
# about a variant whose cached perplexity says it is broken: runtime_demo/known_quality.py).
from tensorgpt.runtime_demo.measurements import (  # noqa: F401  (file_key: part of the API)
    CACHE_NAME,
    CACHE_VERSION,
    file_key,
)
from tensorgpt.runtime_demo.measurements import load_cache as _load_cache

Log = Callable[[str], None]


@dataclass(frozen=True)
class TextOptions:
    """What perplexity is measured on: the same for every variant of one comparison."""

    path: str
    max_tokens: int | None = None
    window: int | None = None
    stride: int | None = None


@dataclass(frozen=True)
class SpeedOptions:
    """Batch-1 greedy decoding from a random prompt (runtime_demo.bench)."""

    threads: int | None = None
    prompt_tokens: int = 32
    decode_tokens: int = 32
    repeats: int = 2
    # Rounds over all variants, interleaved (A B C, A B C, ...); each variant's latency is its
    # best round, since on a shared machine other work only ever adds time.
    rounds: int = 5


def _quiet(_message: str) -> None:
    pass


# ---------------------------------------------------------------------------- reading folders


def read_export(folder: str | Path) -> Manifest:
    """The folder's manifest; a one-line ValueError if the folder is not a tensorgpt export."""
    path = Path(folder)
    if not path.is_dir():
        raise ValueError(f"{str(path)!r} is not a folder (pass export OUT_DIRs to compare)")
    if not (path / MANIFEST_FILE).is_file():
        raise ValueError(f"{path} has no {MANIFEST_FILE}: not a folder written by tensorgpt export")
    manifest, _config = load_manifest(path)  # checks "format" and the config keys
    if not (path / MODEL_FILE).is_file():
        raise ValueError(f"{path} has no {MODEL_FILE}: not a complete export")
    return manifest


def check_same_tokenizer(folders: Sequence[Path], manifests: Sequence[Manifest]) -> None:
    """Perplexities over different tokenizations are not comparable: refuse to mix them."""
    shas = {str(f): (m.tokenizer or {}).get("sha256") for f, m in zip(folders, manifests)}
    if len(set(shas.values())) > 1:
        first, *_ = shas.items()
        other = next((f, s) for f, s in shas.items() if s != first[1])
        raise ValueError(
            f"mixed tokenizers: {first[0]} and {other[0]} have different tokenizer.json "
            "(sha256 differ), so their perplexities are not comparable"
        )


def variant_names(folders: Sequence[Path]) -> list[str]:
    """Folder base names, or the paths as given where two base names collide."""
    names = [f.name or str(f) for f in folders]
    return [n if names.count(n) == 1 else str(f) for n, f in zip(names, folders)]


def is_uncompressed(manifest: Manifest) -> bool:
    return manifest.method == "none" and (manifest.quantize or "none") == "none"


# ---------------------------------------------------------------------------- cache


def _store_cache(folder: Path, key: str, value: dict, log: Log) -> None:
    entries = _load_cache(folder)
    entries[key] = value
    data = json.dumps({"version": CACHE_VERSION, "entries": entries}, indent=1).encode()
    try:
        write_atomic(folder / CACHE_NAME, data)  # an interrupted write keeps the old cache
    except OSError as exc:  # a read-only folder still compares, it just re-measures next time
        log(f"cannot cache measurements in {folder}: {exc}")


def _perplexity_key(folder: Path, text: TextOptions, text_sha: str) -> str:
    return json.dumps(
        {
            "kind": "perplexity",
            "files": file_key(folder),
            "manifest_sha256": sha256_file(folder / MANIFEST_FILE),
            "tokenizer_sha256": sha256_file(folder / TOKENIZER_FILE),
            "text_sha256": text_sha,
            "max_tokens": text.max_tokens,
            "window": text.window,
            "stride": text.stride,
        },
        sort_keys=True,
    )


# ---------------------------------------------------------------------------- measurements


def check_text(path: str | Path) -> None:
    """One pass over the text (never all of it in memory): readable, UTF-8, not empty."""
    from tensorgpt.runtime_demo.text_stream import read_pieces

    for _piece in read_pieces(path):
        pass


def measure_perplexity(
    folder: str | Path,
    text: TextOptions,
    threads: int | None = None,
    use_cache: bool = True,
    log: Log = _quiet,
    check_integrity: bool = True,
) -> dict[str, Any]:
    """Perplexity of the folder on `text` (runtime_demo.perplexity), cached in the folder."""
    from tensorgpt.runtime_demo.integrity import plan_load
    from tensorgpt.runtime_demo.perplexity import text_perplexity
    from tensorgpt.runtime_demo.session import ExportedModel
    from tensorgpt.runtime_demo.tokenizer import load_tokenizer

    folder = Path(folder)
    text_sha = sha256_file(text.path)
    key = _perplexity_key(folder, text, text_sha)
    if use_cache and key in (cached := _load_cache(folder)):
        # the same check a load does: a damaged copy of a measured folder is not reported
        plan_load(folder, read_export(folder), split=True, check=check_integrity)
        return {**cached[key], "cached": True}
    model = ExportedModel(folder, threads=threads, check_integrity=check_integrity)
    log(f"perplexity of {folder.name} ...")
    try:  # streamed and without BOS, as `tensorgpt eval` does
        result = text_perplexity(
            model, load_tokenizer(folder), text.path, text.window, text.stride, text.max_tokens
        )
    except OverflowError:  # exp(mean NLL) past float range: the model is broken, say so
        result = {"perplexity": math.inf}
    del model  # free the session before the caller loads the next one
    result = {**result, "text_sha256": text_sha}
    _store_cache(folder, key, result, log)
    return {**result, "cached": False}


def measure_speed(
    folder: str | Path, speed: SpeedOptions, check_integrity: bool = True
) -> dict[str, Any]:
    """Batch-1 decode latency (median ms per new token) and session load time."""
    from tensorgpt.runtime_demo.bench import bench

    result = bench(
        folder,
        threads=speed.threads,
        prompt_tokens=speed.prompt_tokens,
        decode_tokens=speed.decode_tokens,
        repeats=speed.repeats,
        check_integrity=check_integrity,
    )
    keys = ("decode_ms_median", "decode_ms_p90", "load_s", "ttft_ms", "load_peak_rss_mb")
    return {k: result[k] for k in keys}


# ---------------------------------------------------------------------------- the comparison


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (both minimised).

    A point is dominated when another is <= on both coordinates and < on at least one;
    identical points do not dominate each other, so both stay on the front.
    """
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(
            (ox <= x and oy <= y) and (ox < x or oy < y)
            for j, (ox, oy) in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return front


def _row(name: str, folder: Path, manifest: Manifest) -> dict[str, Any]:
    b = manifest.bytes or {}
    rec = manifest.reconstruction or {}
    verification = manifest.verification or {}
    return {
        "name": name,
        "folder": str(folder),
        "method": manifest.method,
        "quantize": manifest.quantize or "none",
        "method_options": {
            k: v for k, v in (manifest.method_options or {}).items() if v not in (None, False)
        },
        "ranks": (manifest.embedding_info or {}).get("ranks"),
        "file_bytes": model_file_bytes(folder),  # the model file itself
        "folder_bytes": folder_bytes(folder),  # what the user copies to the device
        "embedding_bytes": b.get("embedding"),
        "embedding_ratio": (manifest.ratios or {}).get("embedding_bytes"),
        "file_ratio": None,
        "mae": rec.get("mae"),
        "norm_mae": rec.get("norm_mae"),
        "rel_error": rec.get("rel_fro"),
        "verified": verification.get("passed"),
        "perplexity": None,
        "ppl_change_pct": None,
        "decode_ms": None,
        "load_s": None,
        "load_peak_mb": None,
        "pareto": None,
    }


def compare(
    folders: Sequence[str | Path],
    text: TextOptions | Sequence[TextOptions] | None = None,
    speed: SpeedOptions | None = SpeedOptions(),
    use_cache: bool = True,
    log: Log = _quiet,
    check_integrity: bool = True,
) -> dict[str, Any]:
    """One row per folder (see `_row`), with ratios against the uncompressed folder if given.

    text=None skips perplexity, speed=None skips timing (a sizes-only comparison). Several
    texts (domains): `perplexity` is the first text's, `perplexity_by_text` and
    `ppl_change_by_text` give every text's, `ppl_change_pct` and `worst_text` the worst one.
    """
    texts = [] if text is None else [text] if isinstance(text, TextOptions) else list(text)
    text = texts[0] if texts else None
    if not folders:
        raise ValueError("give at least one exported folder")
    paths = [Path(f) for f in folders]
    manifests = [read_export(p) for p in paths]  # every folder checked before any slow work
    check_same_tokenizer(paths, manifests)
    for t in texts:
        check_text(t.path)
    names = text_names(texts)
    rows = [_row(n, p, m) for n, p, m in zip(variant_names(paths), paths, manifests)]
    base = next((r for r, m in zip(rows, manifests) if is_uncompressed(m)), None)

    for row in rows:
        for name, t in zip(names, texts):
            threads = speed.threads if speed else None
            result = measure_perplexity(row["folder"], t, threads, use_cache, log, check_integrity)
            row.setdefault("perplexity_by_text", {})[name] = result["perplexity"]
            if t is text:
                row["perplexity"] = result["perplexity"]
                row["tokens_scored"] = result.get("scored")
            log(
                f"{row['name']}: perplexity {result['perplexity']:.4g} on {name}"
                + " (cached)" * result["cached"]
            )
    machine = None
    if speed is not None:
        # Shared machines: the load when timing started says how much to trust the latencies.
        machine = {"cpus": usable_cores(), "load_average_1min": load_average()}
        # All variants timed here, in interleaved rounds, so their latencies are comparable.
        if speed.rounds < 1:
            raise ValueError(f"timing rounds must be >= 1, got {speed.rounds}")
        for _ in range(speed.rounds):
            for row in rows:
                timing = measure_speed(row["folder"], speed, check_integrity)
                if row["decode_ms"] is None or timing["decode_ms_median"] < row["decode_ms"]:
                    row["decode_ms"], row["load_s"] = timing["decode_ms_median"], timing["load_s"]
                peak = timing["load_peak_rss_mb"]
                if peak is not None and (row["load_peak_mb"] is None or peak < row["load_peak_mb"]):
                    row["load_peak_mb"] = peak
        for row in rows:
            log(f"{row['name']}: {row['decode_ms']:.1f} ms/token")

    _fill_relative(rows, base)
    measured = [r for r in rows if r["perplexity"] is not None]
    # Several domains: the front is over the worst domain's change, not one text's perplexity.
    key = "ppl_change_pct" if len(texts) > 1 and base is not None else "perplexity"
    for i in pareto_front([(r["file_bytes"], r[key]) for r in measured]):
        measured[i]["pareto"] = True
    for r in measured:
        r["pareto"] = bool(r["pareto"])
    return {
        "baseline": base["name"] if base else None,
        "text": None if text is None else {**asdict(text), "sha256": sha256_file(text.path)},
        "texts": [
            {**asdict(t), "name": n, "sha256": sha256_file(t.path)} for n, t in zip(names, texts)
        ],
        "speed": None if speed is None else {**asdict(speed), **machine},
        "rows": rows,
    }


def text_names(texts: Sequence[TextOptions]) -> list[str]:
    """A short name per text (its file stem), the path where two stems collide."""
    stems = [Path(t.path).stem for t in texts]
    return [s if stems.count(s) == 1 else str(t.path) for s, t in zip(stems, texts)]


def _fill_relative(rows: list[dict], base: dict | None) -> None:
    if base is None:
        return
    for row in rows:
        row["file_ratio"] = base["file_bytes"] / row["file_bytes"]
        if row["perplexity"] is not None and base["perplexity"] is not None:
            row["ppl_change_pct"] = 100.0 * (row["perplexity"] / base["perplexity"] - 1.0)
        by, base_by = row.get("perplexity_by_text"), base.get("perplexity_by_text")
        if by and base_by and len(by) > 1:
            change = {n: 100.0 * (p / base_by[n] - 1.0) for n, p in by.items()}
            row["ppl_change_by_text"] = change
            row["worst_text"] = max(change, key=change.get)
            row["ppl_change_pct"] = change[row["worst_text"]]
