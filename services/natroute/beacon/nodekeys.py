"""Node keys from the registry, for stream hellos: a small cache and one look-up per node.

A stream hello proves a key; the registry says whether it is the node's key
(``GET /v1/nodes/{id}``). :class:`KeyCache` (pure, fed ``now``) keeps the
answers briefly: a found key for :data:`KEY_TTL` seconds, "no such node"
for :data:`UNKNOWN_TTL`, at most ``cap`` node IDs (least recently stored
first out). :class:`NodeKeys` asks the registry on a miss, with one look-up
in flight per node ID (concurrent hellos for the same node share it) and at
most ``max_inflight`` look-ups in all, so a hello flood with random node IDs
cannot turn into a registry flood.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Final

from natroute.routing.errors import RegistryError

from .streamproto import HelloError, HelloReject

__all__ = ["KEY_TTL", "UNKNOWN_TTL", "KeyCache", "NodeKeys"]

#: Seconds a key the registry returned is trusted without asking again.
KEY_TTL: Final = 30.0
#: Seconds a "no such node" answer is kept.
UNKNOWN_TTL: Final = 5.0

#: What :meth:`KeyCache.get` returns for a node ID it holds no answer for.
_MISS: Final = b""


class KeyCache:
    """Registry answers by node ID: a key, or None for "no such node"."""

    def __init__(self, cap: int = 4096) -> None:
        self.cap = cap
        # node ID -> (key or None, expires at); insertion order = age.
        self._entries: OrderedDict[int, tuple[bytes | None, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, node_id: int, now: float) -> bytes | None:
        """The cached answer, or ``b""`` when there is none (or it expired)."""
        hit = self._entries.get(node_id)
        if hit is None or hit[1] <= now:
            return _MISS
        return hit[0]

    def put(self, node_id: int, key: bytes | None, now: float) -> None:
        """Store an answer (a key, or None for "no such node")."""
        entries = self._entries
        entries.pop(node_id, None)
        while len(entries) >= self.cap:
            entries.popitem(last=False)
        entries[node_id] = (key, now + (KEY_TTL if key is not None else UNKNOWN_TTL))


class NodeKeys:
    """The registry's key for a node ID, cached, one look-up per node in flight."""

    def __init__(
        self,
        lookup: Callable[[int], Awaitable[bytes | None]],
        clock: Callable[[], float],
        *,
        cache: KeyCache | None = None,
        max_inflight: int = 32,
    ) -> None:
        """Args:
        lookup: asks the registry (``RegistryClient.node_key``).
        clock: monotonic seconds.
        cache: the answers kept (default: a new 4096-entry cache).
        max_inflight: most look-ups running at once.
        """
        self._lookup = lookup
        self._clock = clock
        self.cache = cache if cache is not None else KeyCache()
        self.max_inflight = max_inflight
        self._inflight: dict[int, asyncio.Future[bytes | None]] = {}

    async def key_of(self, node_id: int) -> bytes | None:
        """The node's key, or None when the registry knows no such node.

        Raises:
            HelloError: ``registry_unavailable`` when the registry cannot be
                asked or answers badly; ``busy`` when too many look-ups run.
        """
        cached = self.cache.get(node_id, self._clock())
        if cached != _MISS:
            return cached
        pending = self._inflight.get(node_id)
        if pending is None:
            if len(self._inflight) >= self.max_inflight:
                raise HelloError(HelloReject.BUSY, "too many registry look-ups in flight")
            pending = asyncio.get_running_loop().create_future()
            self._inflight[node_id] = pending
            try:
                key = await self._lookup(node_id)
            except RegistryError as exc:
                error = HelloError(HelloReject.REGISTRY_UNAVAILABLE, str(exc))
                pending.set_exception(error)
                pending.exception()  # retrieved: waiters re-raise it, none is left unseen
                raise error from exc
            except BaseException as exc:
                pending.set_exception(HelloError(HelloReject.REGISTRY_UNAVAILABLE, repr(exc)))
                pending.exception()
                raise
            finally:
                del self._inflight[node_id]
            self.cache.put(node_id, key, self._clock())
            pending.set_result(key)
            return key
        return await asyncio.shield(pending)
