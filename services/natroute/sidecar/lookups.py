"""Registry look-ups of node IDs: one at a time per ID, queued, rate-limited, remembered.

Frames from unknown senders and payloads to unknown destinations make the
node look IDs up at the registry. Those IDs come from the network, so every
part of the look-up machinery is bounded (docs/protocol.md, "Look-ups"):

* at most one look-up per node ID is queued or in flight;
* the queue holds at most ``queue_cap`` IDs (more are refused, counted);
* at most ``max_in_flight`` look-ups run at once (the shell runs that many
  workers, never a task per look-up);
* a global token bucket paces look-ups (``rate`` per second, ``burst``);
* an "unknown node" answer is remembered for ``negative_ttl`` seconds in a
  capped LRU map, and the same ID is not asked again before then; a failed
  look-up (registry unreachable) is retried no sooner than ``retry_interval``.

Sans-I/O: :meth:`Lookups.request` queues, :meth:`Lookups.start` hands the
shell the IDs to look up now, :meth:`Lookups.finished` records the outcome.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from enum import Enum

from natroute._service.ratelimit import RateLimit, TokenBuckets

__all__ = ["LookupConfig", "LookupOutcome", "Lookups", "Refusal"]


@dataclass(frozen=True, slots=True)
class LookupConfig:
    """Caps and pacing of registry look-ups."""

    queue_cap: int = 256
    max_in_flight: int = 8
    rate: float = 20.0
    burst: float = 50.0
    negative_ttl: float = 30.0
    negative_cap: int = 4096
    retry_interval: float = 3.0


class LookupOutcome(Enum):
    """How a look-up ended."""

    FOUND = "found"
    UNKNOWN = "unknown"  # the registry does not know the ID (or it has no usable key)
    FAILED = "failed"  # the registry did not answer usefully


class Refusal(Enum):
    """Why :meth:`Lookups.request` did not queue an ID."""

    KNOWN_UNKNOWN = "known_unknown"
    QUEUE_FULL = "queue_full"
    TOO_SOON = "too_soon"


class Lookups:
    """The queue, the in-flight set, the negative cache and the pacing."""

    def __init__(self, config: LookupConfig | None = None) -> None:
        self.config = cfg = config or LookupConfig()
        self._queue: OrderedDict[int, None] = OrderedDict()
        self._in_flight: set[int] = set()
        self._unknown: OrderedDict[int, float] = OrderedDict()  # id -> expires_at
        self._failed: OrderedDict[int, float] = OrderedDict()  # id -> retry_at
        self._pace: TokenBuckets[str] = TokenBuckets(RateLimit(cfg.rate, cfg.burst), 1)
        self.started = 0
        self.refused: dict[Refusal, int] = dict.fromkeys(Refusal, 0)

    @property
    def queued(self) -> int:
        """IDs waiting to be looked up."""
        return len(self._queue)

    @property
    def in_flight(self) -> int:
        """Look-ups the shell is running."""
        return len(self._in_flight)

    def is_pending(self, node_id: int) -> bool:
        """Is ``node_id`` queued or being looked up?"""
        return node_id in self._queue or node_id in self._in_flight

    def known_unknown(self, node_id: int, now: float) -> bool:
        """Did the registry say recently that it does not know ``node_id``?"""
        expires = self._unknown.get(node_id)
        if expires is None:
            return False
        if now >= expires:
            del self._unknown[node_id]
            return False
        return True

    def request(self, node_id: int, now: float) -> Refusal | None:
        """Queue a look-up of ``node_id``; None when queued (or already pending)."""
        if node_id in self._queue or node_id in self._in_flight:
            return None
        refusal: Refusal | None = None
        if self.known_unknown(node_id, now):
            refusal = Refusal.KNOWN_UNKNOWN
        else:
            retry_at = self._failed.get(node_id)
            if retry_at is not None and now < retry_at:
                refusal = Refusal.TOO_SOON
            elif len(self._queue) >= self.config.queue_cap:
                refusal = Refusal.QUEUE_FULL
        if refusal is not None:
            self.refused[refusal] += 1
            return refusal
        self._failed.pop(node_id, None)
        self._queue[node_id] = None
        return None

    def cancel(self, node_id: int) -> None:
        """Take ``node_id`` off the queue (an in-flight look-up still finishes)."""
        self._queue.pop(node_id, None)

    def start(self, now: float) -> list[int]:
        """IDs the shell should look up now (within the in-flight cap and the pace)."""
        out: list[int] = []
        while self._queue and len(self._in_flight) < self.config.max_in_flight:
            if not self._pace.allow("*", now):
                break
            node_id, _ = self._queue.popitem(last=False)
            self._in_flight.add(node_id)
            out.append(node_id)
        self.started += len(out)
        return out

    def finished(self, node_id: int, outcome: LookupOutcome, now: float) -> None:
        """Record how the look-up of ``node_id`` ended."""
        self._in_flight.discard(node_id)
        cfg = self.config
        if outcome is LookupOutcome.UNKNOWN:
            self._unknown[node_id] = now + cfg.negative_ttl
            self._unknown.move_to_end(node_id)
            if len(self._unknown) > cfg.negative_cap:
                self._unknown.popitem(last=False)
        elif outcome is LookupOutcome.FAILED:
            self._failed[node_id] = now + cfg.retry_interval
            self._failed.move_to_end(node_id)
            if len(self._failed) > cfg.negative_cap:
                self._failed.popitem(last=False)
        else:
            self._unknown.pop(node_id, None)
            self._failed.pop(node_id, None)
