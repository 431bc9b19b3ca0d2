"""Mistral: sliding-window attention on every layer."""

from __future__ import annotations

from tests.models.family_checks import WindowFamilyChecks


class TestMistral(WindowFamilyChecks):
    FAMILY = "mistral"
