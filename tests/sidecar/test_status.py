"""Status snapshots and the metrics tally against real engines on the in-memory internet."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from natroute.routing.cache import save_beacon_cache
from natroute.sidecar.metrics import SidecarMetrics
from natroute.sidecar.model import DropReason, NodeConfig
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
from tests.internet import FakeClock

from .fakenet import FakeNet, Host


def snapshot(net: FakeNet, a: Host, b: Host) -> PeerStatus:
    record = a.engine.peers.get(b.node_id)
    assert record is not None
    return build_peer_status(
        record, a.manager.peer_routing(b.node_id), net.clock(), a.engine.config.offline_after
    )


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


def test_peer_status_ages_flags_candidates_and_events() -> None:
    net = FakeNet(node_config=NodeConfig(keepalive_interval=5.0, offline_after=20.0))
    a = net.host("a")
    b = net.host("b")
    assert snapshot(net, a, b) if a.engine.peers.get(b.node_id) else True
    net.app_send(a, b, b"hello")
    net.clock.advance(3.0)
    first = snapshot(net, a, b)
    assert (first.node_id, first.name, first.path, first.reason) == (
        b.node_id,
        "b",
        "direct",
        "checked",
    )
    assert (first.relay, first.pinned, first.relay_only, first.state) == (
        False,
        False,
        False,
        "online",
    )
    assert first.addr == f"{b.inside[0]}:{b.inside[1]}"
    assert first.known_for == 3.0
    assert first.rtt_ms is not None
    assert first.last_heard_age == 3.0
    assert [(c.kind, c.chosen) for c in first.candidates] == [("host", True)]
    assert [(e.path, e.reason) for e in first.events] == [
        ("relay", "checking"),
        ("direct", "checked"),
    ]

    assert a.engine.set_relay(b.node_id, True, True, net.clock())
    forced = snapshot(net, a, b)
    assert (forced.path, forced.reason, forced.relay, forced.pinned) == (
        "relay",
        "operator",
        True,
        True,
    )
    assert forced.addr is None
    assert forced.events[-1].detail == "pinned"
    assert forced.events[-1].age == 0.0
    assert first.events[-1].reason == "checked"  # an earlier snapshot does not move

    net.block(a, b)
    b.open = False
    net.clock.advance(25.0)
    silent = snapshot(net, a, b)
    assert silent.state == "offline"


def test_a_relay_only_peer_shows_why_it_is_relayed() -> None:
    net = FakeNet()
    a = net.host("a")
    hidden = net.host("hidden", node_config=NodeConfig(force_relay=True), relay_only=True)
    net.app_send(a, hidden, b"x")
    net.advance(6.0)
    status = snapshot(net, a, hidden)
    assert (status.path, status.reason, status.relay, status.pinned) == (
        "relay",
        "relay_only",
        True,
        True,
    )
    assert status.addr is None
    assert status.relay_only is True
    assert status.candidates == ()
    assert status.relay_rtt_ms is not None  # the relay keepalive probes measured it


def test_metrics_outside_a_render_describe_only_the_build_and_process() -> None:
    text = generate_latest(SidecarMetrics().registry).decode()
    assert "natroute_sidecar_" not in text  # the snapshot families need a snapshot
    assert 'natroute_build_info{version="' in text  # the build and the process always
    assert "process_resident_memory_bytes" in text


def test_counters_count_each_path_change_once_and_keep_traffic_of_removed_peers() -> None:
    net = FakeNet()
    a = net.host("a")
    b = net.host("b")
    net.app_send(a, b, b"x" * 10)
    assert a.engine.path_changes == {PathReason.CHECKING: 1, PathReason.CHECKED: 1}
    first = a.engine.traffic_totals()
    assert first[0] >= 1
    a.engine.set_relay(b.node_id, True, False, net.clock())
    assert a.engine.path_changes[PathReason.OPERATOR] == 1

    assert a.engine.remove_peer(b.node_id)
    assert a.engine.traffic_totals() == first  # counters never go down

    net.clock.advance(1.0)
    net.app_send(a, b, b"y")  # the same node ID again: a new record, counted afresh
    assert a.engine.path_changes[PathReason.CHECKING] == 2
    assert a.engine.traffic_totals()[0] > first[0]


@pytest.mark.asyncio
async def test_status_of_a_sidecar_that_has_not_started(tmp_path: Path) -> None:
    clock = FakeClock(500.0)
    fields: dict[str, Any] = {
        "registry_url": "http://127.0.0.1:9",
        "identity": str(tmp_path / "identity.json"),
        "beacons": "b1.example:7000,b2.example:7000",
        "http_listen": "off",
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
