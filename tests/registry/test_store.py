"""The store's rules on both backends: stable IDs, replay guard, expiry, names,
purge, migrations; and what each backend adds (SQLite's group commit,
PostgreSQL's cross-replica guarantees)."""

from __future__ import annotations

import asyncio
import fcntl
import os
import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from natroute.registry.backends import open_store
from natroute.registry.settings import Settings
from natroute.registry.sqlite import MIGRATIONS, SqliteStore
from natroute.registry.store import (
    ClockSkewError,
    IdSpaceExhaustedError,
    KeyCache,
    NameTakenError,
    NodeNotFoundError,
    NodeRecord,
    ReplayError,
    Store,
    StoreConfig,
    StoreError,
    StoreUnavailableError,
)

from .conftest import START, FakeClock, make_settings

KEY_A = b"a" * 32
KEY_B = b"b" * 32

pytestmark = pytest.mark.asyncio


def ts(clock: FakeClock, offset: float = 0.0) -> int:
    return int((clock() + offset) * 1e6)


async def register(store: Store, clock: FakeClock, key: bytes = KEY_A, **kw: Any) -> int:
    args: dict[str, Any] = {
        "x25519_public_key": None,
        "endpoint": "203.0.113.5:4000",
        "lan_addrs": ["10.0.0.5:4000"],
        "relay_only": False,
        "timestamp_us": ts(clock),
    }
    args.update(kw)
    record, _ = await store.register(key, **args)
    return record.node_id


class Fixed(random.Random):
    """Draws the given values in order, then repeats the last one."""

    def __init__(self, values: list[int]) -> None:
        super().__init__()
        self.values = values

    def randint(self, a: int, b: int) -> int:
        return self.values.pop(0) if len(self.values) > 1 else self.values[0]


async def test_same_key_same_id_new_key_new_id(store: Store, clock: FakeClock) -> None:
    first = await register(store, clock)
    clock.advance(1)
    again = await register(store, clock)
    other = await register(store, clock, KEY_B)
    assert first == again != other
    assert 1 <= first <= 0xFFFFFFFF
    assert other != 0
    assert await store.identity_key(first) == KEY_A
    assert await store.identity_key(12345) is None


async def test_id_survives_reopen_and_delete(settings: Settings, clock: FakeClock) -> None:
    first = await open_store(settings, clock=clock)
    try:
        node_id = await register(first, clock)
        await first.delete_node(node_id)
    finally:
        await first.close()
    reopened = await open_store(settings, clock=clock)
    try:
        clock.advance(1)
        assert await register(reopened, clock) == node_id
        assert await reopened.identity_key(node_id) == KEY_A
    finally:
        await reopened.close()


async def test_id_collision_draws_again_and_exhaustion_raises(
    settings: Settings, clock: FakeClock
) -> None:
    store = await open_store(settings, clock=clock, rng=Fixed([5, 5, 9]))
    try:
        assert await register(store, clock, KEY_A) == 5
        assert await register(store, clock, KEY_B) == 9  # 5 was taken: drawn again
        with pytest.raises(IdSpaceExhaustedError):
            await register(store, clock, b"c" * 32)  # only 9 is ever drawn now
        assert await store.live_counts() == (2, 0)  # the refusal stored nothing
    finally:
        await store.close()


async def test_replay_and_skew_are_refused(store: Store, clock: FakeClock) -> None:
    stamp = ts(clock)
    await register(store, clock, timestamp_us=stamp)
    with pytest.raises(ReplayError):
        await register(store, clock, timestamp_us=stamp)
    with pytest.raises(ClockSkewError, match="registry time"):
        await register(store, clock, timestamp_us=ts(clock, 61))
    with pytest.raises(ClockSkewError):
        await register(store, clock, timestamp_us=ts(clock, -61))
    node_id = await register(store, clock, timestamp_us=stamp + 1)
    with pytest.raises(ReplayError):
        await store.heartbeat(node_id, timestamp_us=stamp + 1)
    await store.heartbeat(node_id, timestamp_us=stamp + 2)


async def test_refused_request_changes_nothing(store: Store, clock: FakeClock) -> None:
    stamp = ts(clock)
    node_id = await register(store, clock, timestamp_us=stamp)
    with pytest.raises(ReplayError):
        await store.heartbeat(node_id, timestamp_us=stamp, endpoint="198.51.100.1:1")
    assert (await store.resolve(node_id)).endpoint == "203.0.113.5:4000"


async def test_heartbeat_keeps_alive_and_updates(store: Store, clock: FakeClock) -> None:
    node_id = await register(store, clock, candidates=[("203.0.113.5:4000", "srflx")])
    clock.advance(80)
    record = await store.heartbeat(node_id, timestamp_us=ts(clock), endpoint="198.51.100.1:7")
    assert record.endpoint == "198.51.100.1:7"
    assert record.lan_addrs == ("10.0.0.5:4000",)
    assert record.candidates == (("203.0.113.5:4000", "srflx"),)
    clock.advance(80)
    assert (await store.resolve(node_id)).last_seen == START + 80
    clock.advance(11)
    with pytest.raises(NodeNotFoundError):
        await store.resolve(node_id)
    # Expired but kept: a heartbeat revives it.
    await store.heartbeat(node_id, timestamp_us=ts(clock), relay_only=True, transport="stream")
    record = await store.resolve(node_id)
    assert (record.relay_only, record.transport) == (True, "stream")


async def test_heartbeat_unknown_node(store: Store, clock: FakeClock) -> None:
    with pytest.raises(NodeNotFoundError, match="register again"):
        await store.heartbeat(1, timestamp_us=ts(clock))


async def test_heartbeats_at_once_each_get_their_own_answer(store: Store, clock: FakeClock) -> None:
    # Sent together, they share a batch where the backend batches (PostgreSQL).
    nodes = [await register(store, clock, key=bytes([n]) * 32) for n in range(1, 9)]
    clock.advance(1)
    now = ts(clock)
    await store.heartbeat(nodes[0], timestamp_us=now + 5)  # makes its next beats replays
    outcomes = await asyncio.gather(
        *(
            store.heartbeat(node_id, timestamp_us=now, endpoint=f"198.51.100.{i}:7")
            for i, node_id in enumerate(nodes)
        ),
        store.heartbeat(nodes[1], timestamp_us=now + 1, candidates=[("198.51.100.99:1", "srflx")]),
        store.heartbeat(nodes[2], timestamp_us=now),  # the same timestamp again
        store.heartbeat(max(nodes) + 1, timestamp_us=now),  # never registered
        return_exceptions=True,
    )
    assert isinstance(outcomes[0], ReplayError)
    for i, outcome in enumerate(outcomes[1:8], start=1):
        assert isinstance(outcome, NodeRecord), outcome
        assert (outcome.node_id, outcome.endpoint) == (nodes[i], f"198.51.100.{i}:7")
    second = outcomes[8]
    assert isinstance(second, NodeRecord)
    assert second.candidates == (("198.51.100.99:1", "srflx"),)
    assert second.endpoint == "198.51.100.1:7"  # kept from the beat before
    assert isinstance(outcomes[9], ReplayError)
    assert isinstance(outcomes[10], NodeNotFoundError)
    assert (await store.resolve(nodes[0])).endpoint == "203.0.113.5:4000"  # refused: unchanged


async def test_resolves_at_once_each_get_their_own_answer(store: Store, clock: FakeClock) -> None:
    # Asked together, they share a query where the backend batches (PostgreSQL).
    stale = await register(store, clock, key=bytes([9]) * 32)
    clock.advance(60)
    nodes = [await register(store, clock, key=bytes([n]) * 32, name=f"n{n}") for n in range(1, 5)]
    clock.advance(40)  # the first has expired (TTL 90 s), the others are live
    asked = [*nodes, stale, max(nodes) + 1, nodes[0]]
    outcomes = await asyncio.gather(*(store.resolve(n) for n in asked), return_exceptions=True)
    for node_id, outcome in zip(asked, outcomes, strict=True):
        if node_id in nodes:
            assert isinstance(outcome, NodeRecord), outcome
            assert outcome.node_id == node_id
            assert outcome.name == f"n{nodes.index(node_id) + 1}"
        else:
            assert isinstance(outcome, NodeNotFoundError), outcome
            assert str(node_id) in str(outcome)


async def test_expiry_boundary(store: Store, clock: FakeClock) -> None:
    node_id = await register(store, clock, name="edge")
    clock.advance(90)
    await store.resolve(node_id)  # exactly the TTL: still live
    await store.resolve_name("edge")
    assert [r.node_id for r in await store.live_nodes(10)] == [node_id]
    clock.advance(0.001)
    with pytest.raises(NodeNotFoundError):
        await store.resolve(node_id)
    with pytest.raises(NodeNotFoundError):
        await store.resolve_name("edge")
    assert await store.live_nodes(10) == []


async def test_relay_only_force_overrides_and_clears(store: Store, clock: FakeClock) -> None:
    node_id = await register(store, clock, relay_only=True)
    assert (await store.set_relay_only_force(node_id, False)).relay_only is False
    clock.advance(1)
    await register(store, clock, relay_only=True)  # force survives re-registration
    assert (await store.resolve(node_id)).relay_only is False
    assert (await store.set_relay_only_force(node_id, None)).relay_only is True
    clock.advance(1)
    await register(store, clock)  # re-registering without it clears the self mark
    assert (await store.resolve(node_id)).relay_only is False
    with pytest.raises(NodeNotFoundError):
        await store.set_relay_only_force(12345, True)


async def test_delete(store: Store, clock: FakeClock) -> None:
    node_id = await register(store, clock)
    await store.delete_node(node_id)
    with pytest.raises(NodeNotFoundError):
        await store.resolve(node_id)
    with pytest.raises(NodeNotFoundError):
        await store.delete_node(node_id)


async def test_names(store: Store, clock: FakeClock) -> None:
    a = await register(store, clock, KEY_A, name="one")
    with pytest.raises(NameTakenError):
        await register(store, clock, KEY_B, name="one")
    b = await register(store, clock, KEY_B, name="two")
    assert (await store.resolve_name("two")).node_id == b
    clock.advance(1)
    await register(store, clock, KEY_A, name="three")  # renaming frees "one"
    clock.advance(1)
    await register(store, clock, KEY_B, name="one")
    assert (await store.resolve_name("one")).node_id == b
    assert (await store.resolve_name("three")).node_id == a
    with pytest.raises(NodeNotFoundError):
        await store.resolve_name("two")


async def test_beacons_list_live_only_by_id(store: Store, clock: FakeClock) -> None:
    changes: list[int] = []
    store.on_beacons_changed(lambda: changes.append(1))
    await store.register_beacon(9, "203.0.113.9:9001")
    clock.advance(30)
    await store.register_beacon(3, "203.0.113.3:9001", "wss://b3.example/relay")
    assert [b.beacon_id for b in await store.live_beacons()] == [3, 9]
    clock.advance(31)
    assert [(b.addr, b.stream_url) for b in await store.live_beacons()] == [
        ("203.0.113.3:9001", "wss://b3.example/relay")
    ]
    await store.register_beacon(9, "203.0.113.99:9001")  # re-register revives, new addr
    assert [(b.beacon_id, b.addr) for b in await store.live_beacons()] == [
        (3, "203.0.113.3:9001"),
        (9, "203.0.113.99:9001"),
    ]
    assert await store.live_counts() == (0, 2)
    assert len(changes) >= 3  # every registration tells the listeners


async def test_purge_after_retention_keeps_identity(
    tmp_path: Path, database_url: str | None, clock: FakeClock
) -> None:
    settings = make_settings(tmp_path, database_url, retention=1000.0)
    store = await open_store(settings, clock=clock)
    try:
        node_id = await register(store, clock)
        await store.register_beacon(1, "203.0.113.1:1")
        clock.advance(999)
        assert await store.purge() == (0, 0)
        clock.advance(2)
        assert await store.purge() == (1, 1)
        with pytest.raises(NodeNotFoundError):
            await store.heartbeat(node_id, timestamp_us=ts(clock))
        assert await register(store, clock) == node_id  # ID kept for the key
    finally:
        await store.close()


async def test_schema_version_and_newer_schema_refused(
    settings: Settings, store: Store, clock: FakeClock
) -> None:
    assert await store.schema_version() == len(MIGRATIONS)
    url = settings.postgres_url()
    if url is None:
        raw = sqlite3.connect(settings.db)
        raw.execute(f"PRAGMA user_version={len(MIGRATIONS) + 1}")
        raw.close()
    else:
        import asyncpg

        conn = await asyncpg.connect(url)
        await conn.execute("UPDATE natroute_schema SET version = version + 1")
        await conn.close()
    with pytest.raises(StoreError, match="newer"):
        await open_store(settings, clock=clock)


async def test_closed_store_is_unavailable(settings: Settings, clock: FakeClock) -> None:
    store = await open_store(settings, clock=clock)
    await store.ping()
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(StoreUnavailableError):
        await store.ping()
    with pytest.raises(StoreUnavailableError):
        await register(store, clock)


# -- SQLite ------------------------------------------------------------------------------


async def test_sqlite_wal_and_unopenable_file(tmp_path: Path, clock: FakeClock) -> None:
    store = SqliteStore(tmp_path / "r.db", StoreConfig(), clock=clock)
    await store.close()
    raw = sqlite3.connect(tmp_path / "r.db")
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        raw.close()
    with pytest.raises(StoreUnavailableError, match="cannot open"):
        SqliteStore(tmp_path / "missing" / "r.db", StoreConfig(), clock=clock)


async def test_sqlite_group_commit_isolates_each_call(tmp_path: Path, clock: FakeClock) -> None:
    """Many calls share transactions; a refused one changes nothing and harms none."""
    store = SqliteStore(tmp_path / "r.db", StoreConfig(), clock=clock)
    try:
        keys = [bytes([i]) * 32 for i in range(1, 101)]
        stamp = ts(clock)
        ids = await asyncio.gather(*(register(store, clock, k, timestamp_us=stamp) for k in keys))
        assert len(set(ids)) == 100
        # Each node: one good heartbeat and one replay of an old timestamp, all at once.
        calls = []
        for i, node_id in enumerate(ids):
            calls.append(
                store.heartbeat(node_id, timestamp_us=stamp + 1, endpoint=f"198.51.100.{i}:1")
            )
            calls.append(store.heartbeat(node_id, timestamp_us=stamp, endpoint="192.0.2.1:1"))
        results = await asyncio.gather(*calls, return_exceptions=True)
        ok = [r for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, ReplayError)]
        assert (len(ok), len(refused)) == (100, 100)
        for i, node_id in enumerate(ids):
            assert (await store.resolve(node_id)).endpoint == f"198.51.100.{i}:1"
    finally:
        await store.close()


async def test_sqlite_writers_of_one_file_take_turns_on_its_lock_file(
    tmp_path: Path, clock: FakeClock
) -> None:
    """A writer waits on ``<db>.writers`` (as another process's writer would hold it)."""
    path = tmp_path / "r.db"
    store = SqliteStore(path, StoreConfig(), clock=clock)
    other = os.open(f"{path}.writers", os.O_RDWR)  # another open file: another writer
    try:
        fcntl.flock(other, fcntl.LOCK_EX)
        write = asyncio.ensure_future(register(store, clock))
        await asyncio.sleep(0.3)
        assert not write.done()  # queued behind the lock, not polling SQLite's
        fcntl.flock(other, fcntl.LOCK_UN)
        node_id = await write
        assert (await store.resolve(node_id)).node_id == node_id
    finally:
        os.close(other)
        await store.close()


# -- PostgreSQL: two replicas in one process (two pools) ---------------------------------


@pytest.fixture
def pg_settings(tmp_path: Path, postgres_url: str) -> Settings:
    return make_settings(tmp_path, postgres_url)


async def test_postgres_racing_registrations_share_one_id(
    pg_settings: Settings, clock: FakeClock
) -> None:
    first = await open_store(pg_settings, clock=clock)
    second = await open_store(pg_settings, clock=clock)
    try:
        keys = [bytes([i]) * 32 for i in range(1, 21)]
        stamp = ts(clock)
        calls = []
        for k in keys:
            for n, replica in enumerate((first, second, first, second)):
                calls.append(register(replica, clock, k, timestamp_us=stamp + n))
        results = await asyncio.gather(*calls, return_exceptions=True)
        ids: dict[bytes, set[int]] = {}
        for k, result in zip([k for k in keys for _ in range(4)], results, strict=True):
            if isinstance(result, BaseException):
                assert isinstance(result, ReplayError), result  # a later timestamp won first
                continue
            ids.setdefault(k, set()).add(result)
        assert all(len(found) == 1 for found in ids.values()), ids
        assert len(ids) == len(keys)
        assert len({next(iter(v)) for v in ids.values()}) == len(keys)
        assert (await first.live_counts())[0] == len(keys)
    finally:
        await first.close()
        await second.close()


async def test_postgres_racing_names_one_winner(pg_settings: Settings, clock: FakeClock) -> None:
    first = await open_store(pg_settings, clock=clock)
    second = await open_store(pg_settings, clock=clock)
    try:
        keys = [bytes([i]) * 32 for i in range(1, 11)]
        calls = [
            register(first if i % 2 else second, clock, k, name="contested")
            for i, k in enumerate(keys)
        ]
        results = await asyncio.gather(*calls, return_exceptions=True)
        winners = [r for r in results if not isinstance(r, BaseException)]
        assert len(winners) == 1
        assert all(isinstance(r, NameTakenError) for r in results if r not in winners)
        assert (await second.resolve_name("contested")).node_id == winners[0]
    finally:
        await first.close()
        await second.close()


async def test_postgres_beacon_registration_reaches_other_replicas(
    pg_settings: Settings, clock: FakeClock
) -> None:
    first = await open_store(pg_settings, clock=clock)
    second = await open_store(pg_settings, clock=clock)
    heard = asyncio.Event()
    second.on_beacons_changed(heard.set)
    told: list[str] = []
    first.on_beacons_changed(lambda: told.append("first"))
    try:
        await first.register_beacon(4, "203.0.113.4:9001")
        await asyncio.wait_for(heard.wait(), timeout=10)  # a safety net, not a timing check
        assert [b.beacon_id for b in await second.live_beacons()] == [4]
        await asyncio.sleep(0.3)  # the notification has reached the first replica too
        assert told == ["first"]  # once, at its commit: not again for its own NOTIFY
    finally:
        await first.close()
        await second.close()


async def test_postgres_unreachable_server_is_unavailable(tmp_path: Path, clock: FakeClock) -> None:
    settings = make_settings(tmp_path, "postgresql://nobody:secret-password@127.0.0.1:1/none")
    with pytest.raises(StoreUnavailableError) as info:
        await open_store(settings, clock=clock)
    assert "secret-password" not in str(info.value)
    assert "nobody:***@127.0.0.1:1" in str(info.value)


async def test_key_cache_reads_through_and_is_bounded(store: Store, clock: FakeClock) -> None:
    ids = [await register(store, clock, bytes([i]) * 32) for i in range(1, 4)]
    cache = KeyCache(capacity=2)
    assert await cache.get(store, 424242) is None
    assert len(cache) == 0  # unknown IDs are not cached
    for i, node_id in enumerate(ids, start=1):
        assert await cache.get(store, node_id) == bytes([i]) * 32
    assert len(cache) == 2  # the oldest went
    await store.delete_node(ids[2])
    assert await cache.get(store, ids[2]) == bytes([3]) * 32  # identities outlive records
    assert len(KeyCache(capacity=0)) == 0
    none = KeyCache(capacity=0)
    assert await none.get(store, ids[0]) == bytes([1]) * 32
    assert len(none) == 0
