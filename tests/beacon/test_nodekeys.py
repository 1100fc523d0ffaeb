"""Registry key look-ups for stream hellos: cache, single flight, bounds (issue 12)."""

from __future__ import annotations

import asyncio

import pytest

from natroute.beacon.nodekeys import KEY_TTL, UNKNOWN_TTL, KeyCache, NodeKeys
from natroute.beacon.streamproto import HelloError, HelloReject
from natroute.routing.errors import RegistryError

from .fakes import FakeClock

KEY = b"k" * 32


def test_cache_ttls_and_cap() -> None:
    cache = KeyCache(cap=2)
    cache.put(1, KEY, 0.0)
    cache.put(2, None, 0.0)
    assert cache.get(1, 0.0) == KEY
    assert cache.get(2, 0.0) is None
    assert cache.get(3, 0.0) == b""  # a miss
    assert cache.get(2, UNKNOWN_TTL) == b""
    assert cache.get(1, KEY_TTL - 0.1) == KEY
    assert cache.get(1, KEY_TTL) == b""
    cache.put(3, KEY, 0.0)  # evicts the oldest (1)
    assert len(cache) == 2
    assert cache.get(1, 0.0) == b""
    cache.put(2, KEY, 1.0)  # re-storing refreshes
    assert cache.get(2, 1.0) == KEY


class Registry:
    """A registry's node keys, answering only when released (a real coroutine, no mock)."""

    def __init__(self, keys: dict[int, bytes]) -> None:
        self.keys = keys
        self.calls: list[int] = []
        self.release = asyncio.Event()
        self.down = False

    async def node_key(self, node_id: int) -> bytes | None:
        self.calls.append(node_id)
        await self.release.wait()
        if self.down:
            raise RegistryError("registry GET: ConnectError")
        return self.keys.get(node_id)


@pytest.mark.asyncio
async def test_one_lookup_per_node_in_flight_and_answers_cached() -> None:
    registry = Registry({5: KEY})
    clock = FakeClock()
    keys = NodeKeys(registry.node_key, clock)
    waiters = [asyncio.create_task(keys.key_of(5)) for _ in range(10)]
    unknown = asyncio.create_task(keys.key_of(6))
    await asyncio.sleep(0)
    registry.release.set()
    assert await asyncio.gather(*waiters) == [KEY] * 10
    assert await unknown is None
    assert registry.calls == [5, 6]
    assert await keys.key_of(5) == KEY  # cached
    assert await keys.key_of(6) is None
    assert registry.calls == [5, 6]
    clock.advance(KEY_TTL)
    assert await keys.key_of(5) == KEY
    assert registry.calls == [5, 6, 5]


@pytest.mark.asyncio
async def test_inflight_cap_and_registry_failure() -> None:
    registry = Registry({})
    keys = NodeKeys(registry.node_key, FakeClock(), max_inflight=2)
    first = [asyncio.create_task(keys.key_of(n)) for n in (1, 1, 2)]
    await asyncio.sleep(0)
    with pytest.raises(HelloError) as busy:
        await keys.key_of(3)
    assert busy.value.reason is HelloReject.BUSY
    registry.down = True
    registry.release.set()
    results = await asyncio.gather(*first, return_exceptions=True)
    assert all(
        isinstance(r, HelloError) and r.reason is HelloReject.REGISTRY_UNAVAILABLE for r in results
    )
    # Failures are not cached: the next hello asks again.
    registry.down = False
    assert await keys.key_of(1) is None
    assert registry.calls == [1, 2, 1]


@pytest.mark.asyncio
async def test_a_cancelled_lookup_fails_its_waiters_and_frees_the_slot() -> None:
    registry = Registry({1: KEY})
    keys = NodeKeys(registry.node_key, FakeClock(), max_inflight=1)
    first = asyncio.create_task(keys.key_of(1))
    await asyncio.sleep(0)
    waiter = asyncio.create_task(keys.key_of(1))
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(HelloError):
        await waiter
    registry.release.set()
    assert await keys.key_of(1) == KEY
