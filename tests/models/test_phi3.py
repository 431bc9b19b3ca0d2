"""Phi-3 / Phi-4-mini: fused qkv and gate/up projections, partial rotary."""

from __future__ import annotations

from tests.models.family_checks import FamilyChecks


class TestPhi3(FamilyChecks):
    FAMILY = "phi3"
