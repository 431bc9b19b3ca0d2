"""Gemma 2: embedding scale, final-logit and attention soft caps, sliding layers."""

from __future__ import annotations

from tests.models.family_checks import WindowFamilyChecks


class TestGemma2(WindowFamilyChecks):
    FAMILY = "gemma2"
