"""Gemma 3 text (Gemma3ForCausalLM): embedding scale, q/k norms, sliding layers."""

from __future__ import annotations

from tests.models import family_checks as checks
from tests.models.conftest import QUIRKY

FAMILY = "gemma3"
METHODS = QUIRKY


def test_parity(exports):
    checks.check_parity(exports)


def test_kv_cache_equals_recompute(exports):
    checks.check_kv_cache(exports)


def test_runtime_generates(exports):
    checks.check_runtime_generates(exports)


def test_window_matters(checkpoint):
    checks.check_window_matters(checkpoint)
