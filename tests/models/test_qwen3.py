"""Qwen3: q/k norms, explicit head_dim."""

from __future__ import annotations

from tests.models.family_checks import FamilyChecks


class TestQwen3(FamilyChecks):
    FAMILY = "qwen3"
