"""The heartbeat's fast parts: the store's two-statement heartbeat, the key
cache (preload, registration, cap). Its fast lane: ``test_lanes.py``."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI

from natroute.registry.app import create_app
from natroute.registry.settings import Settings
from natroute.registry.signing import ACTION_HEARTBEAT, public_key_bytes, sign
from natroute.registry.sqlite import SqliteStore
from natroute.registry.store import (
    KeyCache,
    NodeNotFoundError,
    NodeRecord,
    ReplayError,
    Store,
    StoreConfig,
    StoreUnavailableError,
)

from .conftest import FakeClock
from .test_api import register_body

pytestmark = pytest.mark.asyncio

_JSON = "application/json"


def heartbeat_body(
    key: Ed25519PrivateKey, node_id: int, clock: FakeClock, **fields: Any
) -> dict[str, Any]:
    """A correctly signed heartbeat body for ``node_id``, timestamped now."""
    body: dict[str, Any] = {"timestamp_us": int(clock() * 1e6)} | fields
    return body | {"signature": sign(key, ACTION_HEARTBEAT, body | {"node_id": node_id})}


async def _register(http: httpx.AsyncClient, key: Ed25519PrivateKey, clock: FakeClock) -> int:
    answer = await http.post("/v1/nodes", json=register_body(key, clock))
    assert answer.status_code == 200, answer.text
    return int(answer.json()["node_id"])


async def test_warm_cache_still_checks_every_signature(
    app: FastAPI, http: httpx.AsyncClient, clock: FakeClock, key: Ed25519PrivateKey
) -> None:
    node_id = await _register(http, key, clock)
    other_key = Ed25519PrivateKey.generate()
    other_id = await _register(http, other_key, clock)
    keys: KeyCache = app.state.services.keys
    assert len(keys) == 2  # a registration caches its key: the cache is warm
    path = f"/v1/nodes/{node_id}/heartbeat"
    clock.advance(1)
    for forged in (
        heartbeat_body(other_key, node_id, clock),  # another (cached) node's key
        heartbeat_body(key, other_id, clock),  # this key, signed for the other ID
        heartbeat_body(key, node_id, clock) | {"endpoint": "198.51.100.9:1"},  # altered
    ):
        answer = await http.post(path, json=forged)
        assert answer.status_code == 401, answer.text
        assert answer.json()["error"]["code"] == "bad_signature"
    good = heartbeat_body(key, node_id, clock)
    assert (await http.post(path, json=good)).status_code == 200
    assert (await http.post(path, json=good)).json()["error"]["code"] == "replayed"
    assert await keys.get(app.state.services.store, other_id) == public_key_bytes(other_key)


async def test_heartbeat_returns_the_stored_record(store: Store, clock: FakeClock) -> None:
    record, _ = await store.register(
        b"k" * 32,
        x25519_public_key=b"x" * 32,
        endpoint="203.0.113.5:4000",
        lan_addrs=["10.0.0.5:4000", "10.0.0.6:4000"],
        relay_only=False,
        timestamp_us=int(clock() * 1e6),
        candidates=[("198.51.100.1:4000", "srflx")],
        name="alpha",
    )
    await store.set_relay_only_force(record.node_id, True)
    clock.advance(5)
    beat = await store.heartbeat(
        record.node_id,
        timestamp_us=int(clock() * 1e6),
        endpoint="198.51.100.2:4000",
        transport="stream",
    )
    assert beat == await store.resolve(record.node_id)
    assert (beat.endpoint, beat.transport, beat.last_seen) == (
        "198.51.100.2:4000",
        "stream",
        clock(),
    )
    assert (beat.lan_addrs, beat.candidates, beat.name) == (
        ("10.0.0.5:4000", "10.0.0.6:4000"),
        (("198.51.100.1:4000", "srflx"),),
        "alpha",
    )
    assert beat.relay_only
    assert beat.created_at == record.created_at


async def _add(store: Store, key: bytes, stamp: int) -> tuple[NodeRecord, bool]:
    """Register ``key`` with no addresses at ``stamp`` (µs)."""
    return await store.register(
        key,
        x25519_public_key=None,
        endpoint=None,
        lan_addrs=[],
        relay_only=False,
        timestamp_us=stamp,
    )


async def test_refused_heartbeat_claims_no_timestamp(store: Store, clock: FakeClock) -> None:
    stamp = int(clock() * 1e6)
    record, _ = await _add(store, b"k" * 32, stamp)
    await store.delete_node(record.node_id)
    with pytest.raises(NodeNotFoundError):
        await store.heartbeat(record.node_id, timestamp_us=stamp + 10)
    # The refused heartbeat's timestamp was not recorded: an older one registers.
    again, created = await _add(store, b"k" * 32, stamp + 5)
    assert (again.node_id, created) == (record.node_id, False)
    with pytest.raises(ReplayError):
        await store.heartbeat(record.node_id, timestamp_us=stamp + 5)


async def test_identity_keys_most_recent_first(store: Store, clock: FakeClock) -> None:
    ids = []
    for i in range(1, 4):
        clock.advance(1)
        ids.append((await _add(store, bytes([i]) * 32, int(clock() * 1e6)))[0].node_id)
    clock.advance(1)
    await store.heartbeat(ids[0], timestamp_us=int(clock() * 1e6))  # now the most recent
    await store.delete_node(ids[1])  # no record: not worth caching
    assert await store.identity_keys(10) == [(ids[0], b"\x01" * 32), (ids[2], b"\x03" * 32)]
    assert await store.identity_keys(1) == [(ids[0], b"\x01" * 32)]

    cache = KeyCache(capacity=2)
    assert await cache.preload(store) == 2
    assert await cache.preload(store) == 0  # already there
    cache.put(ids[1], b"\x02" * 32)  # full: the least recently seen (ids[2]) goes
    assert len(cache) == 2
    assert await cache.get(store, ids[2]) == b"\x03" * 32  # read through again
    assert await KeyCache(capacity=0).preload(store) == 0


async def test_put_never_replaces_a_cached_key(store: Store) -> None:
    cache = KeyCache(capacity=4)
    cache.put(5, b"a" * 32)
    cache.put(5, b"b" * 32)
    assert await cache.get(store, 5) == b"a" * 32
    assert await cache.get(store, 6) is None  # the store knows no node 6: not cached
    assert len(cache) == 1
    nothing = KeyCache(capacity=0)
    nothing.put(5, b"a" * 32)
    assert len(nothing) == 0


async def test_lifespan_preloads_the_key_cache(
    settings: Settings, store: Store, clock: FakeClock
) -> None:
    for i in range(1, 4):
        await _add(store, bytes([i]) * 32, int(clock() * 1e6))
    app = create_app(settings.model_copy(update={"key_cache_size": 2}), store=store, clock=clock)
    async with app.router.lifespan_context(app):
        assert len(app.state.services.keys) == 2


async def test_sqlite_savepoint_free_job_failing_oddly_fails_whole(
    tmp_path: Path, clock: FakeClock
) -> None:
    """A job without a savepoint that fails other than by refusing leaves nothing behind."""
    store = SqliteStore(tmp_path / "r.db", StoreConfig(), clock=clock)
    try:
        stamp = int(clock() * 1e6)
        await _add(store, b"k" * 32, stamp)

        def broken(db: sqlite3.Connection) -> None:
            db.execute("UPDATE identities SET last_ts_us = 0")
            raise RuntimeError("half done")

        with pytest.raises(StoreUnavailableError, match="nothing committed"):
            await store._write(broken, savepoint=False)
        with pytest.raises(ReplayError):  # last_ts_us was not reset
            await _add(store, b"k" * 32, stamp)
        assert (await _add(store, b"k" * 32, stamp + 1))[1] is False  # the writer goes on
    finally:
        await store.close()
