"""GPT-2: learned absolute positions, fused qkv (Conv1D), tied head."""

from __future__ import annotations

from tests.models.family_checks import FamilyChecks


class TestGPT2(FamilyChecks):
    FAMILY = "gpt2"
