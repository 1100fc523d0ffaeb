"""Per-source token buckets with a capped source map (spec §3.10, §10 D15).

Each key (a source IP, or an (IP, port) pair) owns one bucket that refills
at ``rate`` tokens a second up to ``burst``. The map holds at most ``cap``
keys in least-recently-used order: a new key at the cap evicts the least
recently seen one, and :meth:`RateLimiter.sweep` drops, least recently seen
first, keys whose bucket has refilled completely (forgetting them loses
nothing); it stops at the first key still refilling, so it is O(removed).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

from .config import RateLimit

__all__ = ["RateLimiter"]

K = TypeVar("K", bound=Hashable)


class RateLimiter(Generic[K]):
    """Token buckets keyed by source; a disabled limit allows everything."""

    def __init__(self, limit: RateLimit, cap: int) -> None:
        """Create an empty limiter.

        Args:
            limit: bucket shape shared by every key.
            cap: most keys tracked at once.
        """
        self.limit = limit
        self.cap = cap
        # key -> [tokens, stamp]; a list so the hot path updates in place.
        self._buckets: OrderedDict[K, list[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, key: K, now: float, cost: float = 1.0) -> bool:
        """Take ``cost`` tokens from ``key``'s bucket if it has them.

        Returns:
            True when the event is within budget (tokens were taken).
        """
        limit = self.limit
        if limit.rate <= 0:
            return True
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.cap:
                self._buckets.popitem(last=False)
            bucket = [limit.burst, now]
            self._buckets[key] = bucket
        else:
            elapsed = now - bucket[1]
            if elapsed > 0:
                bucket[0] = min(limit.burst, bucket[0] + elapsed * limit.rate)
                bucket[1] = now
            self._buckets.move_to_end(key)
        if bucket[0] >= cost:
            bucket[0] -= cost
            return True
        return False

    def sweep(self, now: float) -> int:
        """Forget keys whose bucket would be full again at ``now``.

        Returns:
            How many keys were removed.
        """
        limit = self.limit
        removed = 0
        buckets = self._buckets
        while buckets:
            key, (tokens, stamp) = next(iter(buckets.items()))
            if tokens + (now - stamp) * limit.rate < limit.burst:
                break
            del buckets[key]
            removed += 1
        return removed
