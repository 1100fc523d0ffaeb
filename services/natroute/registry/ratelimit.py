"""Per-client token buckets with a capped table (issue: registration rate limits).

Pure: time comes from the caller (``now``), no clock reads. The table keeps at
most ``max_clients`` buckets; the least recently used one is evicted first,
and an evicted client simply starts again with a full bucket, so a flood of
distinct addresses costs memory ``O(max_clients)`` and never blocks anyone
permanently.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["RateLimiter"]


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token bucket per key: ``rate`` tokens per second, at most ``burst`` stored."""

    def __init__(self, rate: float, burst: float, max_clients: int) -> None:
        """Create an empty table.

        Raises:
            ValueError: ``rate`` or ``burst`` not positive, ``max_clients`` < 1.
        """
        if rate <= 0 or burst < 1 or max_clients < 1:
            raise ValueError("rate must be > 0, burst >= 1 and max_clients >= 1")
        self._rate = rate
        self._burst = burst
        self._max = max_clients
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, key: str, now: float) -> bool:
        """Take one token for ``key`` at time ``now``; False when none is left."""
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = _Bucket(self._burst, now)
                self._buckets[key] = bucket
                if len(self._buckets) > self._max:
                    self._buckets.popitem(last=False)
            else:
                self._buckets.move_to_end(key)
                # max(): a clock that steps back never adds tokens.
                elapsed = max(0.0, now - bucket.updated)
                bucket.tokens = min(self._burst, bucket.tokens + elapsed * self._rate)
                bucket.updated = max(bucket.updated, now)
            if bucket.tokens < 1:
                return False
            bucket.tokens -= 1
            return True
