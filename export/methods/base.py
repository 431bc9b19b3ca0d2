"""`EmbeddingMethod`: what one `--method` must say, and `Option`: one of its flags.

The options shared by several methods (--rank serves tt, tt-matrix and svd) are defined here
once; a method with an option of its own defines it in its own file, and its value travels in
`CompressionSpec.extra`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from tensorgpt.common.command import int_list

if TYPE_CHECKING:
    import numpy as np

    from tensorgpt.export.compress import CompressionSpec
    from tensorgpt.export.embedding_graph import EmbeddingGraph


@dataclass(frozen=True)
class Option:
    """One command-line option of a method.

    name: the CompressionSpec field (or `extra` key) it fills; the flag is --name-with-dashes.
    check: returns an error message for a bad value, or None.
    """

    name: str
    help: str
    type: Callable[[str], Any] = str
    default: Any = None
    check: Callable[[Any], str | None] | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


class EmbeddingMethod:
    """One token-embedding method. Subclasses set the class attributes and `compress`."""

    name: ClassVar[str]
    help: ClassVar[str]  # one line for --help
    options: ClassVar[tuple[Option, ...]] = ()
    order: ClassVar[int] = 100  # position in --help and in `method_names()`
    # Stores its factors as int8 + fp16 scales when `--quantize int8` (TT cores).
    int8_cores: ClassVar[bool] = False
    # False for the dense table: nothing to measure against the original.
    measures_reconstruction: ClassVar[bool] = True

    def validate(self, spec: CompressionSpec) -> None:
        """Checks beyond each option's own (combinations, required options)."""

    def compress(
        self, table: np.ndarray, spec: CompressionSpec, adapter=None, tokenizer=None
    ) -> tuple[EmbeddingGraph, dict]:
        """The embedding graph for float32 `table` (V, D) and a report for the manifest's
        `embedding_info` (ranks, bits, ...). adapter (models/), tokenizer: for calibrated
        methods; they run the model through the adapter, never its attributes."""
        raise NotImplementedError


def _positive_ints(values: tuple[int, ...] | None) -> str | None:
    if values is not None and any(v < 1 for v in values):
        return f"must be positive integers, got {list(values)}"
    return None


RANK = Option(
    "rank",
    "TT rank cap (tt default: 4, the TensorGPT paper's setting); svd: singular values kept "
    "(default: 64)",
    type=int,
    check=lambda v: None if v is None or v >= 1 else f"must be >= 1, got {v}",
)
FACTORS = Option(
    "factors",
    "tt: mode sizes of a row (default: 2s over the row padded to a power of two); "
    "tt-matrix: factors of the hidden size",
    type=int_list,
    check=_positive_ints,
)
REL_ERROR = Option(
    "rel_error",
    "error-bounded TT-SVD: target relative error per row",
    type=float,
    check=lambda v: None if v is None or 0 < v < 1 else f"must be in (0, 1), got {v}",
)
