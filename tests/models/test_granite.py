"""Granite: logits divided by logits_scaling; embedding and residual multipliers."""

from __future__ import annotations

from tests.models.family_checks import FamilyChecks


class TestGranite(FamilyChecks):
    FAMILY = "granite"
