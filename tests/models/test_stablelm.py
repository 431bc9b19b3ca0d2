"""StableLM: partial rotary (0.25), LayerNorm."""

from __future__ import annotations

import pytest

from tests.models import family_checks as checks
from tests.models.conftest import QUIRKY

pytestmark = pytest.mark.slow  # generic path, no hook: opt in with --run-slow
FAMILY = "stablelm"
METHODS = QUIRKY


def test_parity(exports):
    checks.check_parity(exports)


def test_kv_cache_equals_recompute(exports):
    checks.check_kv_cache(exports)


def test_runtime_generates(exports):
    checks.check_runtime_generates(exports)
