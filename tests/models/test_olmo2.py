"""OLMo 2: q/k norms over the whole projection, norms after attention and MLP."""

from __future__ import annotations

from tests.models.family_checks import FamilyChecks


class TestOlmo2(FamilyChecks):
    FAMILY = "olmo2"
