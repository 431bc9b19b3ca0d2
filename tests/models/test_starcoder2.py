"""Starcoder2: LayerNorm, biases, GELU MLP; the generic path."""

from __future__ import annotations

import pytest

from tests.models.family_checks import QUIRKY, FamilyChecks

pytestmark = pytest.mark.slow  # generic path, no hook: opt in with --run-slow


class TestStarcoder2(FamilyChecks):
    FAMILY = "starcoder2"
    METHODS = QUIRKY
