"""SmolLM3: layers without rotary positions."""

from __future__ import annotations

from tests.models.family_checks import FamilyChecks


class TestSmolLM3(FamilyChecks):
    FAMILY = "smollm3"
