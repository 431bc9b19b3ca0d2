"""Gemma 3 text (Gemma3ForCausalLM): embedding scale, q/k norms, sliding layers."""

from __future__ import annotations

from tests.models.family_checks import QUIRKY, WindowFamilyChecks


class TestGemma3(WindowFamilyChecks):
    FAMILY = "gemma3"
    METHODS = QUIRKY
