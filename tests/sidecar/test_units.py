"""Sidecar building blocks: UDP shells, data-plane client, beacon health, settings, peers, frames.

Socket tests use real UDP on 127.0.0.1 port 0; ICMP port-unreachable comes
from sending to a loopback port that was just closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import ValidationError

from natroute._service.cli import build_settings
from natroute.registry.client import Beacon
from natroute.routing.errors import DiscoveryError
from natroute.routing.selection import BeaconSelectionState, compute_refresh_decision
from natroute.routing.types import Addr
from natroute.sidecar.appclient import AppClient, AsyncAppClient, decode_app, encode_app
from natroute.sidecar.beacons import BeaconHealth, QuarantineLister, probe_alive
from natroute.sidecar.settings import Settings
from natroute.sidecar.udp import AppEndpoint, DatagramPump, PeerSocket, bind_udp

from .fakenet import FakeClock

# -- udp: PeerSocket and ICMP attribution -------------------------------------------


def closed_port() -> Addr:
    """A loopback UDP port nobody listens on (bound, then closed)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    addr: Addr = s.getsockname()
    s.close()
    return addr


@pytest.fixture
def peer_socket() -> Iterator[tuple[PeerSocket, list[tuple[Addr, OSError]]]]:
    errors: list[tuple[Addr, OSError]] = []
    sock = bind_udp("127.0.0.1:0", recverr=True)
    sock.setblocking(False)
    try:
        yield PeerSocket(sock, lambda addr, err: errors.append((addr, err))), errors
    finally:
        sock.close()


def test_drain_errors_attributes_icmp_to_the_original_destination(
    peer_socket: tuple[PeerSocket, list[tuple[Addr, OSError]]],
) -> None:
    ps, errors = peer_socket
    dead = closed_port()
    assert ps.sendto(b"x", dead) == 1
    assert ps.drain_errors() == 1
    assert errors[0][0] == dead
    assert errors[0][1].errno == errno.ECONNREFUSED
    assert ps.errors_attributed == 1
    assert ps.drain_errors() == 0  # the queue is empty now


def test_send_after_an_icmp_error_drains_then_retries_once(
    peer_socket: tuple[PeerSocket, list[tuple[Addr, OSError]]],
) -> None:
    ps, errors = peer_socket
    dead = closed_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as live:
        live.bind(("127.0.0.1", 0))
        live.settimeout(2.0)
        ps.sendto(b"to the dead port", dead)
        assert ps.sendto(b"to a live one", live.getsockname()) == len(b"to a live one")
        assert live.recvfrom(100)[0] == b"to a live one"
    # the error was charged to the dead destination, not to the live one
    assert [(addr, err.errno) for addr, err in errors] == [(dead, errno.ECONNREFUSED)]


def test_icmp_error_with_nothing_to_drain_is_raised() -> None:
    # a connected socket without IP_RECVERR reports the error but queues nothing
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        dead = closed_port()
        sock.connect(dead)
        ps = PeerSocket(sock, lambda addr, err: None)
        ps.sendto(b"x", dead)
        with pytest.raises(ConnectionRefusedError):
            ps.sendto(b"y", dead)


def test_other_send_errors_are_raised_and_closed_sockets_drain_nothing(
    peer_socket: tuple[PeerSocket, list[tuple[Addr, OSError]]],
) -> None:
    ps, errors = peer_socket
    with pytest.raises(OSError, match="too long") as info:
        ps.sendto(b"x" * 70_000, closed_port())
    assert info.value.errno == errno.EMSGSIZE
    assert ps.sock.fileno() >= 0
    ps.sock.close()
    assert ps.drain_errors() == 0
    assert errors == []


def test_datagram_pump_feeds_datagrams_errors_and_survives_callback_bugs() -> None:
    got: list[tuple[bytes, Addr]] = []
    errors: list[OSError] = []

    def on_datagram(data: bytes, addr: Addr) -> None:
        if data == b"boom":
            raise RuntimeError("a bug")
        got.append((data, addr))

    sock = bind_udp("127.0.0.1:0", recverr=True)
    pump = DatagramPump(sock, on_datagram, errors.append, batch=2)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other, contextlib.closing(sock):
        other.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        pump.read_ready()  # nothing there: returns at once
        target = sock.getsockname()
        for data in (b"hi", b"boom", b"third"):
            other.sendto(data, target)
        sock.sendto(b"x", closed_port())  # ICMP port unreachable comes back as an error
        time.sleep(0.05)
        pump.read_ready()  # one batch: two datagrams
        assert got == [(b"hi", other.getsockname())]
        pump.read_ready()
        pump.read_ready()
        assert got[1:] == [(b"third", other.getsockname())]
        assert [e.errno for e in errors] == [errno.ECONNREFUSED]
        pump.close()
        assert sock.fileno() == -1


# -- udp: AppEndpoint and the data-plane clients ---------------------------------


async def app_endpoint(on_send: Any, deliver_to: Addr | None, **kwargs: Any) -> AppEndpoint:
    app = AppEndpoint(bind_udp("127.0.0.1:0"), on_send, deliver_to, **kwargs)
    app.start()
    return app


@pytest.mark.asyncio
async def test_app_endpoint_delivers_to_the_learnt_address() -> None:
    sent: list[tuple[int, bytes]] = []
    both = asyncio.Event()

    def on_send(dst: int, payload: bytes) -> None:
        sent.append((dst, payload))
        if len(sent) == 2:
            both.set()

    proto = await app_endpoint(on_send, None)
    try:
        proto.deliver(7, b"too early")  # no application address yet
        assert proto.dropped_no_app == 1
        addr = proto.addr
        async with AsyncAppClient(addr) as app:
            app.sock.sendto(b"abc", addr)  # shorter than a node ID
            await app.send(0x01020304, b"payload")
            await app.send(0, b"")
            async with asyncio.timeout(2):
                await both.wait()
            assert sent == [(0x01020304, b"payload"), (0, b"")]
            assert (proto.dropped_short, proto.received) == (1, 2)
            proto.deliver(0xAABBCCDD, b"back")
            async with asyncio.timeout(2):
                assert await app.recv() == (0xAABBCCDD, b"back")
            assert proto.delivered == 1
        proto.deliver(1, b"x" * 70000)  # too large for UDP: counted, not raised
        assert proto.dropped_busy == 1
    finally:
        proto.close()


@pytest.mark.asyncio
async def test_app_endpoint_fixed_delivery_address_and_send_failures() -> None:
    called = asyncio.Event()

    def broken(dst: int, payload: bytes) -> None:
        called.set()
        raise RuntimeError("node bug")

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as fixed:
        fixed.bind(("127.0.0.1", 0))
        fixed.settimeout(2.0)
        proto = await app_endpoint(broken, fixed.getsockname())
        try:
            addr = proto.addr
            with AppClient(addr) as app:
                app.send(5, b"x")  # the failure is logged, the shell survives
                async with asyncio.timeout(2):
                    await called.wait()
                assert proto.received == 1
                proto.deliver(9, b"to the fixed address")
                assert decode_app(fixed.recvfrom(100)[0]) == (9, b"to the fixed address")
                with pytest.raises(TimeoutError):
                    app.recv(timeout=0.01)  # the app's own address is not used
        finally:
            proto.close()


@pytest.mark.asyncio
async def test_app_endpoint_keeps_its_application_while_it_lives() -> None:
    """A second local socket never takes the deliveries while the first one is bound."""
    clock = FakeClock()
    gone: set[Addr] = set()
    sent: list[tuple[int, bytes]] = []
    own: set[Addr] = set()
    proto = await app_endpoint(
        lambda d, p: sent.append((d, p)),
        None,
        is_self=own.__contains__,
        clock=clock,
        port_free=gone.__contains__,
    )
    try:
        app = ("127.0.0.1", 40001)
        other = ("127.0.0.1", 40002)
        proto._received(encode_app(1, b"a"), app)
        assert proto.deliver_to == app
        proto._received(encode_app(1, b"b"), other)
        assert proto.deliver_to == app  # the application still holds its port
        assert (proto.foreign_sources, proto.target_changes) == (1, 0)
        assert sent == [(1, b"a"), (1, b"b")]  # sending stays open to local sockets
        gone.add(app)  # the application closed its socket
        clock.advance(1.0)
        proto.deliver(7, b"x")  # the contender takes over on the next delivery
        assert proto.deliver_to == other
        assert proto.target_changes == 1
        own.add(("127.0.0.1", 40003))
        proto._received(encode_app(1, b"c"), ("127.0.0.1", 40003))
        assert proto.dropped_self == 1  # our own sockets are never an application
        assert sent[-1] == (1, b"b")
    finally:
        proto.close()


@pytest.mark.asyncio
async def test_app_endpoint_batches_are_checked_datagram_by_datagram() -> None:
    """A recvmmsg batch: the same checks as single reads, then one call to the engine."""
    batches: list[list[bytes]] = []
    own: set[Addr] = {("127.0.0.1", 40003)}
    gone: set[Addr] = set()
    app = AppEndpoint(
        bind_udp("127.0.0.1:0"),
        lambda d, p: pytest.fail("batches never take the single path"),
        None,
        is_self=own.__contains__,
        clock=FakeClock(),
        port_free=gone.__contains__,
        on_send_many=batches.append,
    )
    first, other = ("127.0.0.1", 40001), ("127.0.0.1", 40002)
    app._received_many(
        [
            (encode_app(1, b"a"), first),  # learnt: the application
            (b"xy", first),  # short
            (encode_app(2, b"b"), first),
            (encode_app(3, b"c"), ("127.0.0.1", 40003)),  # our own socket
            (encode_app(4, b"d"), other),  # another local socket: sent, not learnt
        ]
    )
    assert batches == [[encode_app(1, b"a"), encode_app(2, b"b"), encode_app(4, b"d")]]
    assert app.deliver_to == first
    assert (app.received, app.dropped_short, app.dropped_self, app.foreign_sources) == (3, 1, 1, 1)
    app._received_many([(b"", first)])  # nothing accepted: the engine is not called
    assert len(batches) == 1
    app.close()


def test_app_wire_format() -> None:
    assert encode_app(0x01020304, b"p") == b"\x01\x02\x03\x04p"
    assert decode_app(b"\x00\x00\x00\x09") == (9, b"")
    with pytest.raises(ValueError, match="shorter than 4"):
        decode_app(b"\x00\x01")


def test_blocking_app_client_round_trip() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sidecar:
        sidecar.bind(("127.0.0.1", 0))
        sidecar.settimeout(2.0)
        with AppClient(sidecar.getsockname()) as app:
            app.send(3, b"out")
            data, src = sidecar.recvfrom(100)
            assert decode_app(data) == (3, b"out")
            sidecar.sendto(encode_app(4, b"in"), src)
            assert app.recv(timeout=2.0) == (4, b"in")
        assert app.sock.fileno() == -1


# -- beacons: health, quarantine, lister ------------------------------------------


def test_beacon_health_detects_a_silent_beacon() -> None:
    clock = FakeClock()
    health = BeaconHealth(clock, dead_after=30.0, release_after=60.0)
    assert not health.is_dead()  # no beacon picked yet
    health.picked("b1:1")
    clock.advance(30.0)
    assert not health.is_dead()
    clock.advance(1.0)
    assert health.is_dead()  # silent since the pick
    health.replied()
    assert not health.is_dead()
    clock.advance(31.0)
    assert health.is_dead()
    health.picked("b1:1")  # the same beacon again changes nothing
    assert health.is_dead()
    health.picked("b2:2")
    assert (health.current, health.last_reply, health.since) == ("b2:2", None, clock())
    assert not health.is_dead()


def test_beacon_quarantine_probe_and_release() -> None:
    clock = FakeClock()
    health = BeaconHealth(clock, dead_after=30.0, release_after=60.0)
    health.picked("b1:1")
    assert health.mark_dead() == "b1:1"
    assert health.due_for_probe() == []
    clock.advance(60.0)
    assert health.due_for_probe() == ["b1:1"]
    health.release("b1:1")
    health.release("never:1")
    assert health.quarantine == {}


def test_beacon_view_hides_quarantined_beacons_and_commit_applies_back() -> None:
    clock = FakeClock()
    health = BeaconHealth(clock, dead_after=30.0, release_after=60.0)
    state = BeaconSelectionState(["b1:1", "b2:2", "b3:3"])
    first = compute_refresh_decision(state, None, b"key")
    state.apply_refresh_decision(first)
    picked = state.get_current_pick()
    health.picked(picked)
    health.mark_dead()
    view = health.view(state)
    assert picked not in view.bootstrap
    assert view.get_current_pick() == picked  # the view starts from the real pick
    decision = compute_refresh_decision(view, None, b"key")
    assert decision.new_pick != picked
    assert decision.should_swap
    BeaconHealth.commit(state, decision, swapped=False)
    assert state.get_current_pick() == picked  # not swapped: the pick stays
    BeaconHealth.commit(state, decision, swapped=True)
    assert state.get_current_pick() == decision.new_pick
    assert state.snapshot()[1] == decision.new_list


class FakeRegistry:
    """The registry's typed beacon list (``AsyncRegistryClient.beacons()``)."""

    def __init__(self, *addrs: str) -> None:
        self.listed = [Beacon(n, addr) for n, addr in enumerate(addrs, 1)]
        self.calls = 0

    async def beacons(self) -> list[Beacon]:
        self.calls += 1
        return list(self.listed)


@pytest.mark.asyncio
async def test_quarantine_lister_hides_quarantined_beacons() -> None:
    health = BeaconHealth(FakeClock(), dead_after=1.0, release_after=1.0)
    registry = FakeRegistry("b1:1", "b2:2")
    lister = QuarantineLister(registry, health)
    assert await lister() == ["b1:1", "b2:2"]  # nothing quarantined
    health.picked("b1:1")
    health.mark_dead()
    assert await lister() == ["b2:2"]
    assert [b.addr for b in registry.listed] == ["b1:1", "b2:2"]  # the answer is not mutated
    assert registry.calls == 2


@pytest.mark.asyncio
async def test_probe_alive() -> None:
    async def answers(addr: str) -> float:
        return 0.01

    async def silent(addr: str) -> float:
        raise DiscoveryError(f"no reply from {addr}")

    assert await probe_alive(answers, "b1:1")
    assert not await probe_alive(silent, "b1:1")


# -- settings -----------------------------------------------------------------------


def test_settings_defaults_and_derived_configs() -> None:
    s = Settings.model_validate(
        {"blackhole_threshold": 2.0, "check_window": 1.5, "max_relay_peers": 7}
    )
    assert s.listen == "0.0.0.0:4000"
    m = s.manager_config()
    assert (m.blackhole_threshold, m.max_relay_peers) == (2.0, 7)
    n = s.node_config()
    assert (n.check_window, n.max_peers) == (1.5, 4096)
    assert not n.allow_loopback  # 0.0.0.0: a real network
    assert not n.force_relay
    loopback = Settings.model_validate({"listen": "127.0.0.1:0", "relay_only": True})
    assert loopback.node_config().allow_loopback
    assert loopback.node_config().force_relay


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("listen", "no-port", "missing port"),
        ("listen", ":4000", "missing host"),
        ("app_listen", "a:b:c", "too many colons"),
        ("advertise", "host:99999", "invalid port"),
        ("beacons", "b1:1,nope", "missing port"),
        ("registry_url", "ftp://registry", "http"),
        ("log_level", "loud", "'debug', 'info'"),
        ("blackhole_threshold", 0, "greater than 0"),
    ],
)
def test_settings_validators_refuse_bad_values(field: str, value: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings.model_validate({field: value})


def test_settings_normalise_values() -> None:
    s = Settings.model_validate(
        {
            "http_listen": "OFF",
            "registry_url": "http://registry:9000/",
            "log_level": "DEBUG",
            "app_deliver": "",
            "lan_addrs": "192.0.2.1:4000",
        }
    )
    assert (s.http_listen, s.registry_url, s.log_level) == ("", "http://registry:9000", "debug")
    assert Settings.model_validate({"http_listen": "127.0.0.1:0"}).http_listen == "127.0.0.1:0"


def test_build_settings_flags_override_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NATROUTE_SIDECAR_BLACKHOLE_THRESHOLD", "5")
    monkeypatch.setenv("NATROUTE_SIDECAR_MAX_PEERS", "10")
    monkeypatch.setenv("NATROUTE_SIDECAR_BEACONS", "b1:1,b2:2")
    s = _built(["--blackhole-threshold", "2", "--relay-only", "--nat-detect"])
    assert s.blackhole_threshold == 2.0  # the flag wins
    assert s.max_peers == 10  # env only
    assert s.beacons == "b1:1,b2:2"
    assert s.relay_only is True  # bool | None: a flag, unset (None) when not given
    assert s.nat_detect is True
    assert _built([]).blackhole_threshold == 5.0
    assert _built([]).relay_only is None
    assert _built(["--no-relay-only"]).relay_only is False


def _built(argv: list[str]) -> Settings:
    return build_settings(Settings, argv, prog="natroute-sidecar").settings
