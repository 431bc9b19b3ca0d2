"""Llama (Llama 3.2, SmolLM2, TinyLlama): the generic path, no quirk."""

from __future__ import annotations

from tests.models.family_checks import FamilyChecks


class TestLlama(FamilyChecks):
    FAMILY = "llama"
