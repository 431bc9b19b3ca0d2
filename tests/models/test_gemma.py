"""Gemma: embedding scaled by sqrt(hidden) inside the embedding module."""

from __future__ import annotations

from tests.models.family_checks import FamilyChecks


class TestGemma(FamilyChecks):
    FAMILY = "gemma"
