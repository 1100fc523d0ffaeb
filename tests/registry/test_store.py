"""Store core: stable IDs, replay guard, expiry, purge, migrations, durability pragmas."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from natroute.registry.store import (
    MIGRATIONS,
    ClockSkewError,
    IdSpaceExhaustedError,
    NodeNotFoundError,
    ReplayError,
    Store,
    StoreConfig,
    StoreError,
)

from .conftest import START, FakeClock

KEY_A = b"a" * 32
KEY_B = b"b" * 32


def ts(clock: FakeClock, offset: float = 0.0) -> int:
    return int((clock() + offset) * 1e6)


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock) -> Iterator[Store]:
    s = Store(tmp_path / "r.db", StoreConfig(), clock=clock, rng=random.Random(1))
    yield s
    s.close()


def register(store: Store, clock: FakeClock, key: bytes = KEY_A, **kw: object) -> int:
    args: dict[str, object] = {
        "x25519_public_key": None,
        "endpoint": "203.0.113.5:4000",
        "lan_addrs": ["10.0.0.5:4000"],
        "relay_only": False,
        "timestamp_us": ts(clock),
    }
    args.update(kw)
    record, _ = store.register(key, **args)  # type: ignore[arg-type]
    return record.node_id


def test_same_key_same_id_new_key_new_id(store: Store, clock: FakeClock) -> None:
    first = register(store, clock)
    clock.advance(1)
    again = register(store, clock)
    other = register(store, clock, KEY_B)
    assert first == again != other
    assert 1 <= first <= 0xFFFFFFFF
    assert other != 0


def test_id_survives_reopen_and_delete(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "r.db"
    with_store = Store(path, StoreConfig(), clock=clock)
    node_id = register(with_store, clock)
    with_store.delete_node(node_id)
    with_store.close()
    reopened = Store(path, StoreConfig(), clock=clock)
    try:
        clock.advance(1)
        assert register(reopened, clock) == node_id
        assert reopened.identity_key(node_id) == KEY_A
    finally:
        reopened.close()


def test_id_collision_draws_again_and_exhaustion_raises(tmp_path: Path, clock: FakeClock) -> None:
    class Fixed(random.Random):
        def __init__(self, values: list[int]) -> None:
            super().__init__()
            self.values = values

        def randint(self, a: int, b: int) -> int:
            return self.values.pop(0) if len(self.values) > 1 else self.values[0]

    s = Store(tmp_path / "r.db", StoreConfig(), clock=clock, rng=Fixed([5, 5, 9]))
    try:
        assert register(s, clock, KEY_A) == 5
        assert register(s, clock, KEY_B) == 9  # 5 was taken: drawn again
        with pytest.raises(IdSpaceExhaustedError):
            register(s, clock, b"c" * 32)  # only 9 is ever drawn now
    finally:
        s.close()


def test_replay_and_skew_are_refused(store: Store, clock: FakeClock) -> None:
    stamp = ts(clock)
    register(store, clock, timestamp_us=stamp)
    with pytest.raises(ReplayError):
        register(store, clock, timestamp_us=stamp)
    with pytest.raises(ClockSkewError):
        register(store, clock, timestamp_us=ts(clock, 61))
    with pytest.raises(ClockSkewError):
        register(store, clock, timestamp_us=ts(clock, -61))
    node_id = register(store, clock, timestamp_us=stamp + 1)
    with pytest.raises(ReplayError):
        store.heartbeat(node_id, timestamp_us=stamp + 1)
    store.heartbeat(node_id, timestamp_us=stamp + 2)


def test_refused_request_changes_nothing(store: Store, clock: FakeClock) -> None:
    stamp = ts(clock)
    node_id = register(store, clock, timestamp_us=stamp)
    with pytest.raises(ReplayError):
        store.heartbeat(node_id, timestamp_us=stamp, endpoint="198.51.100.1:1")
    assert store.resolve(node_id).endpoint == "203.0.113.5:4000"


def test_heartbeat_keeps_alive_and_updates(store: Store, clock: FakeClock) -> None:
    node_id = register(store, clock)
    clock.advance(80)
    record = store.heartbeat(node_id, timestamp_us=ts(clock), endpoint="198.51.100.1:7")
    assert record.endpoint == "198.51.100.1:7"
    assert record.lan_addrs == ("10.0.0.5:4000",)
    clock.advance(80)
    assert store.resolve(node_id).last_seen == START + 80
    clock.advance(11)
    with pytest.raises(NodeNotFoundError):
        store.resolve(node_id)
    # Expired but kept: a heartbeat revives it.
    store.heartbeat(node_id, timestamp_us=ts(clock), relay_only=True)
    assert store.resolve(node_id).relay_only


def test_heartbeat_unknown_node(store: Store, clock: FakeClock) -> None:
    with pytest.raises(NodeNotFoundError):
        store.heartbeat(1, timestamp_us=ts(clock))


def test_expiry_boundary(store: Store, clock: FakeClock) -> None:
    node_id = register(store, clock)
    clock.advance(90)
    store.resolve(node_id)  # exactly the TTL: still live
    clock.advance(0.001)
    with pytest.raises(NodeNotFoundError):
        store.resolve(node_id)


def test_relay_only_force_overrides_and_clears(store: Store, clock: FakeClock) -> None:
    node_id = register(store, clock, relay_only=True)
    assert store.set_relay_only_force(node_id, False).relay_only is False
    clock.advance(1)
    register(store, clock, relay_only=True)  # force survives re-registration
    assert store.resolve(node_id).relay_only is False
    assert store.set_relay_only_force(node_id, None).relay_only is True
    clock.advance(1)
    register(store, clock)  # re-registering without it clears the self mark (§4.3)
    assert store.resolve(node_id).relay_only is False
    with pytest.raises(NodeNotFoundError):
        store.set_relay_only_force(12345, True)


def test_delete(store: Store, clock: FakeClock) -> None:
    node_id = register(store, clock)
    store.delete_node(node_id)
    with pytest.raises(NodeNotFoundError):
        store.resolve(node_id)
    with pytest.raises(NodeNotFoundError):
        store.delete_node(node_id)


def test_beacons_list_live_only_by_id(store: Store, clock: FakeClock) -> None:
    store.register_beacon(9, "203.0.113.9:9001")
    clock.advance(30)
    store.register_beacon(3, "203.0.113.3:9001")
    assert [b.beacon_id for b in store.live_beacons()] == [3, 9]
    clock.advance(31)
    assert [b.addr for b in store.live_beacons()] == ["203.0.113.3:9001"]
    store.register_beacon(9, "203.0.113.99:9001")  # re-register revives, new addr
    assert [(b.beacon_id, b.addr) for b in store.live_beacons()] == [
        (3, "203.0.113.3:9001"),
        (9, "203.0.113.99:9001"),
    ]
    assert store.live_counts() == (0, 2)


def test_purge_after_retention_keeps_identity(tmp_path: Path, clock: FakeClock) -> None:
    s = Store(tmp_path / "r.db", StoreConfig(retention=1000.0), clock=clock)
    try:
        node_id = register(s, clock)
        s.register_beacon(1, "203.0.113.1:1")
        clock.advance(999)
        assert s.purge() == (0, 0)
        clock.advance(2)
        assert s.purge() == (1, 1)
        with pytest.raises(NodeNotFoundError):
            s.heartbeat(node_id, timestamp_us=ts(clock))
        assert register(s, clock) == node_id  # ID kept for the key
    finally:
        s.close()


def test_schema_and_pragmas(store: Store, tmp_path: Path) -> None:
    assert store.schema_version() == len(MIGRATIONS)
    raw = sqlite3.connect(tmp_path / "r.db")
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        raw.close()


def test_refuses_newer_schema(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "r.db"
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version={len(MIGRATIONS) + 1}")
    raw.close()
    with pytest.raises(StoreError, match="newer"):
        Store(path, StoreConfig(), clock=clock)


def test_ping_after_close_raises(tmp_path: Path, clock: FakeClock) -> None:
    s = Store(tmp_path / "r.db", StoreConfig(), clock=clock)
    s.ping()
    s.close()
    with pytest.raises(sqlite3.ProgrammingError):
        s.ping()
