"""StableLM: partial rotary (0.25), LayerNorm."""

from __future__ import annotations

import pytest

from tests.models.family_checks import QUIRKY, FamilyChecks

pytestmark = pytest.mark.slow  # generic path, no hook: opt in with --run-slow


class TestStableLm(FamilyChecks):
    FAMILY = "stablelm"
    METHODS = QUIRKY
