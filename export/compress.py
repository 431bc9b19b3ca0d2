"""`CompressionSpec` (what `--method` and its options ask for) and `compress_embedding`.

The methods themselves live in export/methods/, one registered class each; this module only
validates a spec against the registry, dispatches, and measures the reconstruction.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from tensorgpt.common.files import stored_path
from tensorgpt.export.methods import all_options, get_method

if TYPE_CHECKING:  # not at run time: the CLI imports this module, and onnx is slow to load
    from tensorgpt.export.embedding_graph import EmbeddingGraph


@dataclass(frozen=True)
class CompressionSpec:
    """A method and its options. The fields are the options the built-in methods share;
    an option that only a newer method defines travels in `extra` as (name, value) pairs."""

    method: str = "none"
    rank: int | None = None  # rank cap; tt default 4 (the paper's setting)
    factors: tuple[int, ...] | None = None  # tt: mode sizes of a row; tt-matrix: factors of D
    vocab_factors: tuple[int, ...] | None = None  # tt-matrix only
    rel_error: float | None = None  # error-bounded truncation instead of a rank cap
    int8_cores: bool = False  # store TT cores as int8 + fp16 scales (set by --quantize int8)
    bits_per_weight: float | None = None  # tc: the byte budget, in bits per table entry
    calib_text: str | None = None  # tc: calibration text (never the evaluation text)
    heal_steps: int = 0  # tc: fit codebooks/scales/means/basis to the model's logits (0: off)
    extra: tuple[tuple[str, Any], ...] = ()

    def get(self, name: str) -> Any:
        """The value of option `name`, a field or an `extra` entry (None if unset)."""
        if name != "extra" and name in {f.name for f in dataclasses.fields(self)}:
            return getattr(self, name)
        return dict(self.extra).get(name)

    def validate(self) -> None:
        """Every option's own check, then: options the method does not take are refused,
        then the method's own checks. Errors name the flag."""
        method = get_method(self.method)
        options = all_options()
        known = {o.name for o in options}
        for name, _ in self.extra:
            if name not in known:
                raise ValueError(f"unknown option {name!r} (known: {', '.join(sorted(known))})")
        for option in options:
            value = self.get(option.name)
            problem = option.check(value) if option.check else None
            if problem:
                raise ValueError(f"{option.flag} {problem}")
        takes = {o.name for o in method.options}
        for option in options:
            if option.name not in takes and self.get(option.name) != option.default:
                users = _methods_taking(option.name)
                raise ValueError(
                    f"{option.flag} needs --method {' or '.join(users)}"
                    if len(users) == 1
                    else f"{option.flag} does not apply to --method {self.method}"
                    + (f" (it takes {', '.join(o.flag for o in method.options)})" if takes else "")
                )
        if self.int8_cores and not method.int8_cores:
            raise ValueError(f"int8 cores (--quantize int8) do not apply to --method {self.method}")
        method.validate(self)

    def options(self) -> dict:
        """The manifest's `method_options`: every option, lists for tuples."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values.pop("method")
        values.pop("extra")
        values.update(self.extra)
        if self.calib_text:  # `ck/x.txt` and `./ck/x.txt`: same file, same manifest bytes
            values["calib_text"] = stored_path(self.calib_text)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in values.items()}


def _methods_taking(option: str) -> list[str]:
    from tensorgpt.export.methods import method_names

    return [m for m in method_names() if option in {o.name for o in get_method(m).options}]


def compress_embedding(
    table: np.ndarray, spec: CompressionSpec, adapter=None, tokenizer=None
) -> tuple[EmbeddingGraph, dict]:
    """The embedding graph for `spec` and a report (ranks, params, reconstruction metrics).

    adapter (models/), tokenizer: needed by calibrated methods (tc) only.
    """
    spec.validate()
    table = np.asarray(table, dtype=np.float32)
    method = get_method(spec.method)
    graph, info = method.compress(table, spec, adapter, tokenizer)
    info = dict(info)
    info["reconstruction"] = None
    if method.measures_reconstruction:
        from tensorgpt.tt_ops.metrics import table_metrics

        metrics = table_metrics(table, graph.dense_rows)  # chunk by chunk
        info["reconstruction"] = {k: float(v) for k, v in metrics.items()}
    return graph, info


def report_embedding(spec: CompressionSpec, info: dict, log) -> None:
    """Log what compress_embedding did (`info` but the metrics), and a rank cap above what
    the TT shapes allow, which the decomposition lowers silently: the user should hear it."""
    details = {k: v for k, v in info.items() if k != "reconstruction"}
    log(f"embedding: method {spec.method} {details or ''}")
    ranks = info.get("ranks")
    capped = spec.rank is not None and ranks and max(ranks) < spec.rank
    if capped and spec.method in ("tt", "tt-matrix"):
        log(
            f"--rank {spec.rank} is more than the TT shapes allow: ranks are capped at "
            f"{max(ranks)} (the unfoldings of a row bound them)"
        )
