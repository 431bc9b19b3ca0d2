"""Cohere (Command R): logits multiplied by logit_scale; parallel attention/MLP."""

from __future__ import annotations

import pytest

from tests.models.family_checks import QUIRKY, FamilyChecks

pytestmark = pytest.mark.slow  # generic path, no hook: opt in with --run-slow


class TestCohere(FamilyChecks):
    FAMILY = "cohere"
    METHODS = QUIRKY
