"""Status snapshots and the metrics tally against a real Node and Manager on a fake clock."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from prometheus_client import generate_latest

from natroute.routing.cache import save_beacon_cache
from natroute.routing.manager import Manager
from natroute.routing.types import Addr
from natroute.sidecar.crypto import PeerCipher
from natroute.sidecar.frames import InnerType
from natroute.sidecar.metrics import SidecarMetrics
from natroute.sidecar.node import DropReason, Node, PeerInfo
from natroute.sidecar.peers import PathReason
from natroute.sidecar.service import Sidecar
from natroute.sidecar.settings import Settings
from natroute.sidecar.status import (
    CacheAge,
    PeerStatus,
    build_peer_status,
    build_status,
    format_age,
    read_cache_age,
)
from tests.routing.fakes import FakeClock, RecordingSender

PEER = 2
PEER_ADDR: Addr = ("127.0.0.1", 5000)


class RecordingIO:
    """The Node's shell callbacks, recorded."""

    def __init__(self) -> None:
        self.delivered: list[tuple[int, bytes]] = []
        self.resolves: list[int] = []

    def deliver(self, src: int, payload: bytes) -> None:
        self.delivered.append((src, payload))

    def resolve(self, node_id: int) -> None:
        self.resolves.append(node_id)

    def endpoint_observed(self, addr: Addr) -> None:
        pass


def _public(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


NODE_KEY = X25519PrivateKey.from_private_bytes(bytes(range(32)))
PEER_KEY = X25519PrivateKey.from_private_bytes(bytes(range(32, 64)))


def make_node(clock: FakeClock) -> tuple[Node, Manager, RecordingSender]:
    manager = Manager(clock)
    node = Node(manager, RecordingIO(), 1, NODE_KEY, epoch=1, clock=clock)
    sender = RecordingSender()
    node.set_socket(sender)
    return node, manager, sender


def resolve(node: Node, peer: int = PEER, *, relay_only: bool = False) -> None:
    """The registry answers; a direct peer then answers our dial (ends the hold)."""
    endpoint = None if relay_only else PEER_ADDR
    node.on_resolved(PeerInfo(peer, endpoint, relay_only, _public(PEER_KEY)))
    if not relay_only:
        _answers[peer] = _answers.get(peer, 0) + 1
        cipher = PeerCipher(peer, PEER_KEY, node.node_id, _public(NODE_KEY), _answers[peer])
        node.datagram_received(cipher.seal(bytes([InnerType.KEEPALIVE])), PEER_ADDR)


_answers: dict[int, int] = {}  # epochs used per peer, so every answer is fresh


def snapshot(node: Node, manager: Manager, clock: FakeClock, peer: int = PEER) -> PeerStatus:
    record = node.peers.get(peer)
    assert record is not None
    return build_peer_status(record, manager.peer_routing(peer), clock())


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (0.0, "0ms"),
        (0.85, "850ms"),
        (12.34, "12.3s"),
        (245.0, "4m05s"),
        (7620.0, "2h07m"),
        (3 * 86400 + 4 * 3600 + 5, "3d04h"),
    ],
)
def test_format_age(seconds: float | None, text: str) -> None:
    assert format_age(seconds) == text


def test_read_cache_age(tmp_path: Path) -> None:
    identity = str(tmp_path / "identity.json")
    assert read_cache_age(identity, 0.0) == CacheAge()
    saved = datetime(2026, 11, 26, 3, 0, 0, tzinfo=UTC)
    save_beacon_cache(identity, ["a.example:1", "b.example:2"], now=saved)
    assert read_cache_age(identity, saved.timestamp() + 90.0) == CacheAge(90.0, 2)
    assert read_cache_age(identity, saved.timestamp() - 5.0).age == 0.0  # clock stepped back
    (tmp_path / "beacons.json").write_text(json.dumps({"addrs": ["a.example:1"]}))
    no_time = read_cache_age(identity, saved.timestamp())
    assert (no_time.age, no_time.addrs) == (None, 1)
    assert "saved_at" in no_time.error
    (tmp_path / "beacons.json").write_text("[1, 2")
    broken = read_cache_age(identity, saved.timestamp())
    assert broken.age is None
    assert broken.error.startswith("parse beacon cache")


def test_peer_status_ages_flags_and_events() -> None:
    clock = FakeClock()
    node, manager, sender = make_node(clock)
    resolve(node)
    clock.advance(3.0)
    first = snapshot(node, manager, clock)
    assert (first.node_id, first.path, first.reason) == (PEER, "direct", "punched")
    assert (first.relay, first.pinned, first.relay_only) == (False, False, False)
    assert first.addr == "127.0.0.1:5000"
    assert first.known_for == 3.0
    assert first.last_direct_recv_age == 3.0  # the peer answered the dial at once
    assert first.last_send_age == 3.0  # our keepalive answer to it
    assert first.probes_sent == manager.config.direct_clears_required
    assert [(e.path, e.reason, e.age) for e in first.events] == [("direct", "punched", 3.0)]

    node.send_app(PEER, b"payload")
    clock.advance(2.0)
    sent = snapshot(node, manager, clock)
    assert sent.pkts_sent == 2  # the keepalive answer and the payload
    assert sent.bytes_sent == sum(len(d) for d, _ in sender.sent[-2:])
    assert sent.last_send_age == 2.0
    assert sent.last_used_age == 2.0

    assert node.set_relay(PEER, True, True)
    forced = snapshot(node, manager, clock)
    assert (forced.path, forced.reason, forced.relay, forced.pinned) == (
        "relay",
        "operator",
        True,
        True,
    )
    assert forced.events[-1].detail == "pinned"
    assert forced.events[-1].age == 0.0
    assert first.events[0].reason == "punched"  # an earlier snapshot does not move


def test_relay_only_peer_is_pinned_in_its_status() -> None:
    clock = FakeClock()
    node, manager, _ = make_node(clock)
    resolve(node, 3, relay_only=True)
    status = snapshot(node, manager, clock, 3)
    assert (status.path, status.reason, status.relay, status.pinned) == (
        "relay",
        "relay_only",
        True,
        True,
    )
    assert status.addr is None
    assert status.relay_only is True


def test_metrics_outside_a_render_are_empty() -> None:
    assert generate_latest(SidecarMetrics().registry) == b""


def test_counters_count_each_path_change_once_and_keep_traffic_of_removed_peers() -> None:
    clock = FakeClock()
    node, _, _ = make_node(clock)
    resolve(node)
    node.send_app(PEER, b"x" * 10)
    assert node.path_changes == {PathReason.PUNCHED: 1}
    first = node.traffic_totals()
    assert first[0] == 2  # the keepalive answer to the dial's answer, and the payload
    node.set_relay(PEER, True, False)  # same instant as the punch event
    node.set_relay(PEER, False, False)
    assert node.path_changes == {PathReason.PUNCHED: 1, PathReason.OPERATOR: 2}

    assert node.remove_peer(PEER)
    assert node.traffic_totals() == first  # counters never go down

    clock.advance(1.0)
    resolve(node)  # the same node ID again: a new record, counted afresh
    node.send_app(PEER, b"y")
    assert node.path_changes == {PathReason.PUNCHED: 2, PathReason.OPERATOR: 2}
    assert node.traffic_totals()[0] == first[0] + 2


@pytest.mark.asyncio
async def test_status_of_a_sidecar_that_has_not_started(tmp_path: Path) -> None:
    clock = FakeClock(500.0)
    fields: dict[str, Any] = {
        "registry_url": "http://127.0.0.1:9",
        "identity": str(tmp_path / "identity.json"),
        "beacons": "b1.example:7000,b2.example:7000",
        "admin_listen": "off",
    }
    settings = Settings(**fields)
    sidecar = Sidecar(settings, clock=clock)
    try:
        clock.advance(42.0)
        status = build_status(sidecar, cache=CacheAge(12.0, 3))
        assert status.uptime == 42.0
        assert status.taken_at == 542.0
        assert status.node_id is None
        assert (status.ready, status.registered) == (False, False)
        assert status.nat.type == "unknown"
        assert status.beacon.bootstrap == ("b1.example:7000", "b2.example:7000")
        assert status.beacon.beacons == ()
        assert (status.beacon.pick, status.beacon.reason, status.beacon.source) == (
            "",
            None,
            "none",
        )
        assert (status.beacon.cache_age, status.beacon.cache_addrs) == (12.0, 3)
        assert status.counters.drops == {r.value: 0 for r in DropReason}
        assert status.peers_total == 0
        text = SidecarMetrics().render(status).decode()
        assert "natroute_sidecar_uptime_seconds 42.0" in text
        assert "natroute_sidecar_beacon_cache_age_seconds 12.0" in text
        assert 'natroute_sidecar_beacon_list_source{source="none"} 1.0' in text
        assert "natroute_sidecar_beacon_refresh_age_seconds" not in text
    finally:
        await sidecar.stop()
