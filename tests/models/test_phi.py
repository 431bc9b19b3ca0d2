"""Phi (phi-1.5, phi-2): partial rotary, parallel block, untied head with a bias."""

from __future__ import annotations

import pytest

from tests.models import family_checks as checks
from tests.models.conftest import QUIRKY

pytestmark = pytest.mark.slow  # opt in with --run-slow
FAMILY = "phi"
METHODS = QUIRKY


def test_parity(exports):
    checks.check_parity(exports)


def test_kv_cache_equals_recompute(exports):
    checks.check_kv_cache(exports)


def test_runtime_generates(exports):
    checks.check_runtime_generates(exports)
