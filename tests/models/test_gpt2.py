"""GPT-2: learned absolute positions, fused qkv (Conv1D), tied head."""

from __future__ import annotations

from tests.models import family_checks as checks
from tests.models.conftest import COMMON

FAMILY = "gpt2"
METHODS = COMMON


def test_parity(exports):
    checks.check_parity(exports)


def test_kv_cache_equals_recompute(exports):
    checks.check_kv_cache(exports)


def test_runtime_generates(exports):
    checks.check_runtime_generates(exports)
