"""Nemotron (Minitron, Nemotron-Mini): LayerNorm1P (1 + w), squared-ReLU MLP, partial rotary
0.5, untied head; the generic path, no hook."""

from __future__ import annotations

import pytest

from tests.models.family_checks import QUIRKY, FamilyChecks

pytestmark = pytest.mark.slow  # generic path, no hook: opt in with --run-slow


class TestNemotron(FamilyChecks):
    FAMILY = "nemotron"
    METHODS = QUIRKY
