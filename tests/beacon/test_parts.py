"""Unit tests of the core's parts: auth helpers, node table, rate limiter, gossip."""

from __future__ import annotations

import logging

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from natroute.beacon.auth import (
    DISCOVER_AUTH_LEN,
    DiscoverAuthError,
    discover_auth_message,
    sign_discover,
    verify_discover,
)
from natroute.beacon.config import BeaconConfig
from natroute.beacon.core import BeaconCore
from natroute.beacon.gossip import GossipTable, chunk_ids
from natroute.routing.wire import Discover, encode_message

from .fakes import FakeClock

A = ("198.51.100.1", 4000)
#: The encoding of the identity point, a public key of small order.
_IDENTITY = bytes([1]) + bytes(31)
B = ("203.0.113.7", 5000)


def test_sign_discover_layout_and_roundtrip() -> None:
    key = Ed25519PrivateKey.generate()
    extra = sign_discover(key, 0xDEADBEEF, 1_800_000_000)
    assert len(extra) == DISCOVER_AUTH_LEN == 104
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert extra[:32] == raw
    assert extra[32:40] == (1_800_000_000).to_bytes(8, "big")
    message = b"natroute-discover|" + bytes.fromhex("deadbeef") + extra[32:40]
    assert discover_auth_message(0xDEADBEEF, 1_800_000_000) == message
    key.public_key().verify(extra[40:], message)
    signed = verify_discover(extra, 0xDEADBEEF, 1_800_000_100.0)
    assert signed.pubkey == raw
    assert signed.unix_time == 1_800_000_000


@pytest.mark.parametrize(
    ("mutate", "node_id", "wall", "reason"),
    [
        pytest.param(lambda e: e[:-1], 5, 1000.0, "malformed", id="short"),
        pytest.param(lambda e: e + b"x", 5, 1000.0, "malformed", id="long"),
        pytest.param(lambda e: e, 5, 1121.0, "stale", id="late"),
        pytest.param(lambda e: e, 5, 879.0, "stale", id="early"),
        pytest.param(lambda e: e, 6, 1000.0, "bad_signature", id="other-node"),
        pytest.param(lambda e: e[:40] + bytes(64), 5, 1000.0, "bad_signature", id="zero-sig"),
        pytest.param(  # a small-order key: R = identity, S = 0 "verifies" any message (D44)
            lambda e: _IDENTITY + e[32:40] + _IDENTITY + bytes(32),
            5,
            1000.0,
            "bad_signature",
            id="identity-key-forgery",
        ),
        pytest.param(
            lambda e: e[:32] + (1001).to_bytes(8, "big") + e[40:],
            5,
            1000.0,
            "bad_signature",
            id="other-time",
        ),
    ],
)
def test_verify_discover_rejects(mutate: object, node_id: int, wall: float, reason: str) -> None:
    key = Ed25519PrivateKey.generate()
    extra = mutate(sign_discover(key, 5, 1000))  # type: ignore[operator]
    with pytest.raises(DiscoverAuthError) as info:
        verify_discover(extra, node_id, wall)
    assert info.value.reason == reason


def test_verify_discover_window_edges_inclusive() -> None:
    key = Ed25519PrivateKey.generate()
    extra = sign_discover(key, 5, 1000)
    verify_discover(extra, 5, 1120.0)
    verify_discover(extra, 5, 880.0)
    verify_discover(extra, 5, 1010.0, max_skew=10.0)


def test_gossip_table_apply_lookup_cap_sweep() -> None:
    table = GossipTable(cap=2, ttl=30.0)
    table.set_static_peers([A])
    table.set_listed_peers([B])
    assert table.peers == {A, B}
    table.set_listed_peers([])
    assert table.peers == {A}
    assert table.apply(A, [1, 2, 3], 0.0) == 1
    assert table.lookup(1, 0.0) == A
    assert table.lookup(3, 0.0) is None
    assert table.apply(B, [1], 10.0) == 0
    assert table.lookup(1, 10.0) == B
    assert table.apply(A, [4], 31.0) == 0  # node 2 expired: evicted
    assert table.lookup(2, 31.0) is None
    assert table.lookup(1, 40.0) is None
    assert table.sweep(40.0) == 1
    assert table.sweep(100.0) == 1
    assert table.sweep(100.0) == 0


def test_chunk_ids() -> None:
    assert list(chunk_ids([], 2)) == []
    assert list(chunk_ids([1, 2, 3, 4, 5], 2)) == [(1, 2), (3, 4), (5,)]
    assert list(chunk_ids([1, 2], 2)) == [(1, 2)]


def test_core_logs_drops_and_sweeps_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    core = BeaconCore(BeaconConfig(beacon_id=1, node_ttl=5.0), wall_clock=clock)
    with caplog.at_level(logging.DEBUG, logger="natroute.beacon.core"):
        core.handle_datagram(b"\x0b", A, clock())
        core.handle_datagram(encode_message(Discover(3)), A, clock())
        core.sweep(clock.advance(10))
    events = [(r.getMessage(), getattr(r, "reason", None)) for r in caplog.records]
    assert ("beacon_dropped", "unknown_type") in events
    assert any(message == "beacon_swept" for message, _ in events)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="natroute.beacon.core"):
        core.handle_datagram(b"\x0b", A, clock())
        core.sweep(clock())
    assert caplog.records == []
