"""The one token-bucket rate limiter of the services (``natroute._service.ratelimit``)."""

from __future__ import annotations

import pytest

from natroute._service.ratelimit import RateLimit, TokenBuckets


def test_refill_cap_and_sweep() -> None:
    limiter: TokenBuckets[str] = TokenBuckets(RateLimit(rate=2.0, burst=2.0), cap=2)
    assert limiter.allow("a", 0.0)
    assert limiter.allow("a", 0.0)
    assert not limiter.allow("a", 0.0)
    assert not limiter.allow("a", 0.0, cost=0.5)
    assert limiter.allow("a", 0.25, cost=0.5)
    assert not limiter.allow("a", 0.0)  # time going backwards refills nothing
    assert limiter.allow("b", 0.3)
    assert limiter.allow("c", 0.3)  # evicts "a", the least recently seen
    assert len(limiter) == 2
    assert limiter.allow("a", 0.3)  # a fresh bucket
    assert limiter.sweep(0.5) == 0
    assert limiter.sweep(10.0) == 2
    assert len(limiter) == 0
    assert limiter.sweep(10.0) == 0


def test_a_refused_event_still_counts_as_seen() -> None:
    """The registry's case: per client IP, least recently seen evicted first."""
    limiter: TokenBuckets[str] = TokenBuckets(RateLimit(rate=0.001, burst=1.0), cap=2)
    assert limiter.allow("a", 0.0)
    assert limiter.allow("b", 0.0)
    assert not limiter.allow("a", 0.0)  # touches "a": "b" is now the oldest
    assert limiter.allow("c", 0.0)  # evicts "b"
    assert not limiter.allow("a", 0.0)  # "a" kept its empty bucket
    assert limiter.allow("b", 0.0)  # "b" starts afresh


def test_disabled_limit_allows_everything() -> None:
    limiter: TokenBuckets[str] = TokenBuckets(RateLimit(rate=0.0, burst=0.0), cap=1)
    assert all(limiter.allow(str(i), 0.0, cost=1e9) for i in range(10))
    assert len(limiter) == 0


def test_cap_must_be_positive() -> None:
    with pytest.raises(ValueError, match="cap"):
        TokenBuckets(RateLimit(1.0, 1.0), cap=0)
    assert RateLimit(1.0, 1.0).enabled
    assert not RateLimit(0.0, 5.0).enabled
