"""Fakes shared by the beacon tests: the suite's one fake clock."""

from __future__ import annotations

from tests.internet import FakeClock

__all__ = ["FakeClock"]
