"""Phi (phi-1.5, phi-2): partial rotary, parallel block, untied head with a bias."""

from __future__ import annotations

import pytest

from tests.models.family_checks import QUIRKY, FamilyChecks

pytestmark = pytest.mark.slow  # opt in with --run-slow


class TestPhi(FamilyChecks):
    FAMILY = "phi"
    METHODS = QUIRKY
