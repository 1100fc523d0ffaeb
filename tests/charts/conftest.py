"""Fixtures of the chart tests: each value set rendered once per module."""

from __future__ import annotations

import pytest

from .chart import VALUE_SETS, Manifest, render

__all__ = ["rendered"]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Manifest]]:
    """Value set name → the objects the chart renders with it."""
    return {name: render(values) for name, values in VALUE_SETS.items()}
