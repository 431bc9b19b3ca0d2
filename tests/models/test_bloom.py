"""Bloom: see tests/conftest.py FAMILIES; the generic path."""

from __future__ import annotations

import pytest

from tests.models.family_checks import QUIRKY, FamilyChecks

pytestmark = pytest.mark.slow  # opt in with --run-slow


class TestBloom(FamilyChecks):
    FAMILY = "bloom"
    METHODS = QUIRKY
