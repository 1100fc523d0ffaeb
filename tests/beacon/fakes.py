"""Fakes shared by the beacon tests: a clock the test advances."""

from __future__ import annotations

__all__ = ["FakeClock"]


class FakeClock:
    """A settable clock: ``clock()`` returns ``now``; ``advance`` moves it."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now
