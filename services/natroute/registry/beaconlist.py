"""``GET /v1/beacons`` served pre-encoded: the body is built once per change.

The list is the same for every caller between two changes, so the app keeps
the encoded JSON bytes and answers from them. The bytes are rebuilt from the
store when

* a beacon registers (:meth:`BeaconListCache.invalidate`, called by the
  store's change hook: on PostgreSQL also for registrations on other
  replicas, through ``LISTEN``/``NOTIFY``);
* the first listed beacon expires (the cached body remembers the earliest
  ``last_seen + beacon_ttl`` of the beacons it lists);
* :data:`MAX_AGE` seconds passed, a bound on staleness should a change
  notification be lost (e.g. while a replica reconnects its listener, or with
  several processes on one SQLite file).

A rebuild that races with an invalidation is served once but not kept.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from typing import Final

from .models import beacon_entry
from .store import BeaconRecord, Store

__all__ = ["MAX_AGE", "BeaconListCache", "encode_beacon_list"]

#: Longest a cached body is served without asking the store again (seconds).
MAX_AGE: Final = 5.0


def encode_beacon_list(beacons: Sequence[BeaconRecord]) -> bytes:
    """The ``GET /v1/beacons`` body: ``{"beacons": [{"id", "addr", "stream_url"?}]}``."""
    entries = [beacon_entry(b.beacon_id, b.addr, b.stream_url) for b in beacons]
    return json.dumps({"beacons": entries}, separators=(",", ":")).encode()


class BeaconListCache:
    """The encoded beacon list and when it stops being valid."""

    def __init__(
        self,
        clock: Callable[[], float],
        beacon_ttl: float,
        on_build: Callable[[], None] | None = None,
    ) -> None:
        self._clock = clock
        self._ttl = beacon_ttl
        self._on_build = on_build
        self._body: bytes | None = None
        self._first: str | None = None
        self._valid_until = 0.0
        self._generation = 0
        self._lock = asyncio.Lock()

    def invalidate(self) -> None:
        """Forget the body (the list may have changed)."""
        self._body = None
        self._generation += 1

    async def body(self, store: Store) -> bytes:
        """The current encoded list, rebuilt from ``store`` only when needed."""
        body = self._body
        if body is not None and self._clock() <= self._valid_until:
            return body
        return (await self._rebuild(store))[0]

    async def first_addr(self, store: Store) -> str | None:
        """The address of the live beacon with the lowest ID (``None``: no beacon)."""
        if self._body is not None and self._clock() <= self._valid_until:
            return self._first
        return (await self._rebuild(store))[1]

    async def _rebuild(self, store: Store) -> tuple[bytes, str | None]:
        async with self._lock:  # one rebuild at a time; the others get its result
            body, first = self._body, self._first
            now = self._clock()
            if body is not None and now <= self._valid_until:
                return body, first
            generation = self._generation
            beacons = await store.live_beacons()
            body = encode_beacon_list(beacons)
            first = beacons[0].addr if beacons else None
            if self._on_build is not None:
                self._on_build()
            if generation == self._generation:
                expiries = [b.last_seen + self._ttl for b in beacons]
                self._valid_until = min([now + MAX_AGE, *expiries])
                self._body, self._first = body, first
            return body, first
