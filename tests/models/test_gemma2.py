"""Gemma 2: embedding scale, final-logit and attention soft caps, sliding layers."""

from __future__ import annotations

from tests.models import family_checks as checks
from tests.models.conftest import COMMON

FAMILY = "gemma2"
METHODS = COMMON


def test_parity(exports):
    checks.check_parity(exports)


def test_kv_cache_equals_recompute(exports):
    checks.check_kv_cache(exports)


def test_runtime_generates(exports):
    checks.check_runtime_generates(exports)


def test_window_matters(checkpoint):
    checks.check_window_matters(checkpoint)
