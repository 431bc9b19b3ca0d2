"""Falcon: see tests/conftest.py FAMILIES; the generic path with models/falcon.py's KV head count."""

from __future__ import annotations

import pytest

from tests.models.family_checks import QUIRKY, FamilyChecks

pytestmark = pytest.mark.slow  # opt in with --run-slow


class TestFalcon(FamilyChecks):
    FAMILY = "falcon"
    METHODS = QUIRKY
