"""`tensorgpt sweep`: export a grid of variants of one model, measure them, compare them.

Every variant is `tensorgpt export MODEL OUT/<name> <args>` run as a subprocess (memory is
returned to the system after each export; a crash in one variant does not end the sweep).
A variant is done when OUT/<name>/manifest.json exists and says verification passed: exports
are atomic, so an interrupted export leaves no such folder and a rerun simply builds it again.
Perplexities are cached in each variant's folder as soon as they are measured
(tensorgpt/compare.py), so a rerun after an interruption redoes only what is missing.

While one variant's perplexity is measured, the next variant is exported beside it (at most
one export at a time); decode speed is timed at the end for all variants, with no export
running, so the latencies compare.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tensorgpt.common.contract import MANIFEST_FILE, MODEL_FILE, Manifest

# The default grid: (name, export arguments). Names are folder names. Two entries depend on the
# model's shape and are filled in once one export has told us V and D:
#   {svd_rank}  truncated SVD at the embedding bytes of per-token TT rank 4
#   {ttm_rank}  shared-core TT-matrix rank giving about 6x on the table
# Calibration text of the tc variants: wikitext-2 valid, never the test text used for perplexity.
CALIB_TEXT = "../shared/data/wikitext-2/valid.txt"

TC_24X = repr(32 / 24)  # bits per weight of a 24x smaller table, exactly as the benchmark uses
HEAL_STEPS = "120"


def _tc(bits: str, *more: str) -> tuple[str, ...]:
    return ("--method", "tc", "--bits-per-weight", bits, "--calib-text", CALIB_TEXT, *more)


DEFAULT_GRID: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("none", ()),  # uncompressed fp32: the reference every ratio and change is measured against
    ("ort-int8", ("--quantize", "ort-int8")),  # onnxruntime quantize_dynamic, whole file
    ("int8-matmuls", ("--quantize", "int8")),  # ours: transformer MatMuls only
    ("int8-rows", ("--method", "int8-rows")),
    ("int4-rows", ("--method", "int4-rows")),
    ("int8-rows+int8-matmuls", ("--method", "int8-rows", "--quantize", "int8")),
    ("svd-k{svd_rank}", ("--method", "svd", "--rank", "{svd_rank}")),
    ("tt-r1", ("--method", "tt", "--rank", "1")),  # the paper's ranks: 1, 2, 4, 8
    ("tt-r2", ("--method", "tt", "--rank", "2")),
    ("tt-r4", ("--method", "tt", "--rank", "4")),
    ("tt-r8", ("--method", "tt", "--rank", "8")),
    ("tt-r16", ("--method", "tt", "--rank", "16")),  # reference: bigger than the dense table
    ("tt-matrix-r{ttm_rank}", ("--method", "tt-matrix", "--rank", "{ttm_rank}")),
    # 4-bit block weights (Q4_1 grid, exact for a Q4_1 GGUF source), alone and with tables
    ("q4", ("--quantize", "q4")),
    ("int8-rows+q4", ("--method", "int8-rows", "--quantize", "q4")),
    # transform-coded table at the byte budget that fills a 75 MB SmolLM2 file with q4
    ("tc2.2+q4", _tc("2.2", "--quantize", "q4")),
    # the table at 24x (issue 7's target), coded only and healed (HEAL_STEPS fit in 30 min)
    ("tc1.33+q4", _tc(TC_24X, "--quantize", "q4")),
    ("tc1.33+heal+q4", _tc(TC_24X, "--heal-steps", HEAL_STEPS, "--quantize", "q4")),
)

TT_MATRIX_TARGET_RATIO = 6.0
TT_MATRIX_ORDER = 3  # tt_ops.tt_matrix's default order, which the export uses


@dataclass(frozen=True)
class Variant:
    name: str
    args: tuple[str, ...]

    @property
    def needs_shape(self) -> bool:
        return "{" in self.name or any("{" in a for a in self.args)

    def resolve(self, values: dict[str, int]) -> Variant:
        return Variant(self.name.format(**values), tuple(a.format(**values) for a in self.args))


def default_grid() -> list[Variant]:
    return [Variant(name, args) for name, args in DEFAULT_GRID]


def select(grid: Sequence[Variant], only: Sequence[str] | None) -> list[Variant]:
    """The grid, or the entries named in `only` (names as in DEFAULT_GRID, before filling in)."""
    if not only:
        return list(grid)
    known = {v.name: v for v in grid}
    unknown = [n for n in only if n not in known]
    if unknown:
        raise ValueError(
            f"--only: unknown variant(s) {', '.join(unknown)}; choose from {', '.join(known)}"
        )
    return [v for v in grid if v.name in only]


# ---------------------------------------------------------------------------- shape-dependent ranks


def tt_param_count(dim: int, rank: int) -> int:
    """Parameters per token of per-token TT at the paper's tensorization (tt_ops.ratios)."""
    from tensorgpt.tt_ops.ratios import paper_ratios

    return int(paper_ratios(dim, [rank])[0]["params_per_token"])


def svd_rank_matching_tt(vocab: int, dim: int, tt_rank: int = 4) -> int:
    """k with 4 k (V + D) <= the bytes of per-token TT at `tt_rank` (fp32 cores, V P bytes)."""
    tt_bytes = vocab * tt_param_count(dim, tt_rank) * 4
    return max(1, min(tt_bytes // (4 * (vocab + dim)), vocab, dim))  # SVD rank <= min(V, D)


def tt_matrix_params(vocab: int, dim: int, rank: int) -> int:
    from tensorgpt.tt_ops.shapes import max_ranks, suggest_factors

    vf = suggest_factors(vocab, TT_MATRIX_ORDER, exact=False)
    df = suggest_factors(dim, TT_MATRIX_ORDER)
    modes = [a * b for a, b in zip(vf, df)]
    ranks = [min(rank, r) for r in max_ranks(modes)]
    return sum(ranks[k] * modes[k] * ranks[k + 1] for k in range(len(modes)))


def tt_matrix_rank_for_ratio(vocab: int, dim: int, target: float = TT_MATRIX_TARGET_RATIO) -> int:
    """The rank whose compression ratio V D / params is closest to `target` (log scale)."""
    best, best_gap = 1, math.inf
    for rank in range(1, 1025):
        gap = abs(math.log(vocab * dim / tt_matrix_params(vocab, dim, rank) / target))
        if gap < best_gap:
            best, best_gap = rank, gap
    return best


def shape_values(vocab: int, dim: int) -> dict[str, int]:
    return {
        "svd_rank": svd_rank_matching_tt(vocab, dim),
        "ttm_rank": tt_matrix_rank_for_ratio(vocab, dim),
    }


# ---------------------------------------------------------------------------- building


def is_done(folder: Path) -> bool:
    """A finished export: manifest present, verification passed, model file present."""
    try:
        manifest = Manifest.read(folder)
    except (OSError, ValueError):
        return False
    verification = manifest.verification
    return (
        isinstance(verification, dict)
        and verification.get("passed") is True
        and (folder / MODEL_FILE).is_file()
    )


def export_command(model: str, folder: Path, args: Sequence[str]) -> list[str]:
    # --force: a folder without a passing manifest is a leftover we may replace.
    return [sys.executable, "-m", "tensorgpt", "export", model, str(folder), *args, "--force"]


def _remove_stale_staging(out: Path, name: str) -> None:
    """A killed export (SIGKILL, power loss) cannot clean its staging folder; we can."""
    for stale in out.glob(f".{name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)


@dataclass
class Build:
    """One export subprocess; its output goes to OUT/logs/<name>.log."""

    variant: Variant
    folder: Path
    process: subprocess.Popen
    log_path: Path

    def wait(self) -> str | None:
        """None on success, else the last line of the export's error output."""
        code = self.process.wait()
        if code == 0 and is_done(self.folder):
            return None
        lines = self.log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        return lines[-1] if lines else f"export exited with code {code}"


def start_build(model: str, out: Path, variant: Variant) -> Build:
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    _remove_stale_staging(out, variant.name)
    log_path = logs / f"{variant.name}.log"
    folder = out / variant.name
    with open(log_path, "w", encoding="utf-8") as log_file:
        process = subprocess.Popen(
            export_command(model, folder, variant.args),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    return Build(variant, folder, process, log_path)


# ---------------------------------------------------------------------------- the sweep


@dataclass
class SweepResult:
    built: list[str] = field(default_factory=list)  # exported in this run
    skipped: list[str] = field(default_factory=list)  # already done before this run
    failed: dict[str, str] = field(default_factory=dict)  # name -> error line
    folders: list[Path] = field(default_factory=list)  # done variants, grid order


def check_source(out: Path, model: str) -> None:
    """Refuse to mix variants of two models in one OUT folder."""
    for manifest_path in sorted(out.glob(f"*/{MANIFEST_FILE}")):
        try:
            source = Manifest.read(manifest_path.parent).source
        except (OSError, ValueError):
            continue
        if source is not None and source != model:
            raise ValueError(
                f"{manifest_path.parent} was exported from {source!r}, not {model!r}: "
                "use another --out for another model"
            )


def _shape_from(out: Path, names: Sequence[str]) -> tuple[int, int] | None:
    """(vocab, hidden) from the manifest of any finished variant."""
    for name in names:
        try:
            config = Manifest.read(out / name).config
        except (OSError, ValueError):
            continue
        return config.vocab_size, config.hidden_size
    return None


def run_sweep(
    model: str,
    out: Path,
    variants: Sequence[Variant],
    measure: Callable[[Path], None] | None = None,
    log: Callable[[str], None] = print,
) -> SweepResult:
    """Build every variant not yet done; call `measure(folder)` on each done one in turn.

    The next build is started before `measure` runs, so an export and a measurement overlap.
    """
    out.mkdir(parents=True, exist_ok=True)
    check_source(out, model)
    result = SweepResult()
    queue = list(variants)
    values: dict[str, int] | None = None
    running: Build | None = None

    def resolved(v: Variant) -> Variant | None:
        nonlocal values
        if not v.needs_shape:
            return v
        if values is None:
            shape = _shape_from(out, [d.name for d in result.folders] or _known_names(out))
            if shape is None:
                return None
            values = shape_values(*shape)
            log(f"[sweep] V={shape[0]}, D={shape[1]}: {values}")
        return v.resolve(values)

    def next_to_build(start: int) -> Variant | None:
        for v in queue[start:]:
            r = resolved(v)
            if r is None:
                return None  # its name depends on a shape not known yet: build it when reached
            if not is_done(out / r.name):
                return r
        return None

    try:
        for index, template in enumerate(queue):
            variant = resolved(template)
            if variant is None:
                result.failed[template.name] = "no finished export to read the model's shape from"
                continue
            folder = out / variant.name
            if is_done(folder) and (running is None or running.variant != variant):
                result.skipped.append(variant.name)
            else:
                if running is None or running.variant != variant:
                    log(
                        f"[sweep] exporting {variant.name}: {' '.join(variant.args) or '(defaults)'}"
                    )
                    running = start_build(model, out, variant)
                error = running.wait()
                running = None
                if error:
                    log(f"[sweep] {variant.name} FAILED: {error}")
                    result.failed[variant.name] = error
                    continue
                result.built.append(variant.name)
                log(f"[sweep] built {variant.name}")
            result.folders.append(folder)
            following = next_to_build(index + 1) if running is None else None
            if following is not None and measure is not None:
                log(f"[sweep] exporting {following.name} (beside the measurement)")
                running = start_build(model, out, following)
            if measure is not None:
                measure(folder)
    finally:
        if running is not None:  # interrupted: stop the export we started (it leaves nothing)
            running.process.terminate()
            running.process.wait()
    return result


def _known_names(out: Path) -> list[str]:
    return sorted(p.parent.name for p in out.glob(f"*/{MANIFEST_FILE}"))
