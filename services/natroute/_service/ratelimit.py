"""Token buckets keyed by client, with a capped key map: the one rate limiter of the services.

Each key (a source IP, an (IP, port) pair, a session) owns one bucket that
refills at ``rate`` tokens a second up to ``burst``; an event of cost ``c``
takes ``c`` tokens or is refused. Pure: time comes from the caller (``now``,
monotonic seconds); a clock that steps back adds no tokens. Not thread-safe:
a caller that uses it from several threads holds its own lock.

The map holds at most ``cap`` keys in least-recently-used order: a new key at
the cap evicts the least recently seen one (which then starts again with a
full bucket, so a flood of distinct keys costs O(cap) memory and never locks
anyone out), and :meth:`TokenBuckets.sweep` drops, oldest first, keys whose
bucket has refilled completely (forgetting them loses nothing); it stops at
the first key still refilling, so it is O(removed).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from .expiry import sweep_oldest

__all__ = ["RateLimit", "TokenBuckets"]

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A token bucket shape: ``rate`` tokens per second, at most ``burst`` saved.

    A rate of 0 or less disables the limit.
    """

    rate: float
    burst: float

    @property
    def enabled(self) -> bool:
        """True when the limit is enforced."""
        return self.rate > 0


class TokenBuckets(Generic[K]):
    """Token buckets keyed by client; a disabled limit allows everything."""

    def __init__(self, limit: RateLimit, cap: int) -> None:
        """Create an empty map.

        Args:
            limit: bucket shape shared by every key.
            cap: most keys tracked at once.

        Raises:
            ValueError: ``cap`` below 1.
        """
        if cap < 1:
            raise ValueError("cap must be at least 1")
        self.limit = limit
        self.cap = cap
        # key -> [tokens, stamp]; a list so the hot path updates in place.
        self._buckets: OrderedDict[K, list[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, key: K, now: float, cost: float = 1.0) -> bool:
        """Take ``cost`` tokens from ``key``'s bucket if it has them.

        Returns:
            True when the event is within budget (the tokens were taken).
        """
        limit = self.limit
        if limit.rate <= 0:
            return True
        buckets = self._buckets
        bucket = buckets.get(key)
        if bucket is None:
            if len(buckets) >= self.cap:
                buckets.popitem(last=False)
            bucket = buckets[key] = [limit.burst, now]
        else:
            elapsed = now - bucket[1]
            if elapsed > 0:
                tokens = bucket[0] + elapsed * limit.rate
                bucket[0] = tokens if tokens < limit.burst else limit.burst
                bucket[1] = now
            buckets.move_to_end(key)
        if bucket[0] >= cost:
            bucket[0] -= cost
            return True
        return False

    def sweep(self, now: float) -> int:
        """Forget keys whose bucket would be full again at ``now``.

        Returns:
            How many keys were removed.
        """
        rate, burst = self.limit.rate, self.limit.burst
        return sweep_oldest(self._buckets, lambda b: b[0] + (now - b[1]) * rate >= burst)
