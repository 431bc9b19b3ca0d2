"""Qwen2 / Qwen2.5: sliding window where enabled (here layer 1), qkv biases."""

from __future__ import annotations

from tests.models.family_checks import WindowFamilyChecks


class TestQwen2(WindowFamilyChecks):
    FAMILY = "qwen2"
