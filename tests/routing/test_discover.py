"""Endpoint discovery and the RTT probe over real UDP on 127.0.0.1.

docs/protocol.md, "Endpoint discovery and the RTT probe". ``test_s8_N``: the
seed's upstream test scenario N; ``test_s9_N``: an edge case the upstream tests
left out.

The fake beacon is a socket on 127.0.0.1 port 0 answering one Discover from a
thread that is bounded by a socket timeout and always joined.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import pytest

from natroute.routing import (
    Addr,
    DiscoveryError,
    ResolveError,
    discover_endpoint,
    probe_beacon_rtt,
)
from natroute.routing.addr import format_addr

from .fakes import FakeClock

Reply = Callable[[bytes, Addr], bytes | None]
GOLDEN_REPLY = bytes.fromhex("02 04 c6336463 1000")


def constant(reply: bytes) -> Reply:
    return lambda data, src: reply


@contextmanager
def fake_beacon(reply: Reply, before: Sequence[bytes] = ()) -> Iterator[tuple[str, list[bytes]]]:
    """A beacon on 127.0.0.1:0 that answers the first datagram once, from a thread,
    after sending ``before`` to the same address."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5.0)
    received: list[bytes] = []

    def serve() -> None:
        try:
            data, src = sock.recvfrom(2048)
        except OSError:
            return
        received.append(data)
        for datagram in before:
            sock.sendto(datagram, src)
        out = reply(data, (src[0], src[1]))
        if out is not None:
            sock.sendto(out, src)

    thread = threading.Thread(target=serve, name="fake-beacon", daemon=True)
    thread.start()
    try:
        yield format_addr(sock.getsockname()), received
    finally:
        thread.join(6.0)
        sock.close()
    assert not thread.is_alive()


@pytest.fixture
def client() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    with sock:
        yield sock


def test_s8_47_discover_endpoint(client: socket.socket) -> None:
    with fake_beacon(constant(GOLDEN_REPLY)) as (beacon, received):
        assert discover_endpoint(beacon, 0x01020304, client, 5.0) == ("198.51.100.99", 4096)
    assert received == [bytes.fromhex("01 01020304")]


def test_s8_48_malformed_beacon_address(client: socket.socket) -> None:
    with pytest.raises(ResolveError, match="resolve beacon"):
        discover_endpoint("not a host:port", 0, client, 1.0)
    for bad in ("127.0.0.1", ":9001", "[::1", "127.0.0.1:99999", ""):
        with pytest.raises(ResolveError):
            discover_endpoint(bad, 0, client, 1.0)


def test_s9_01_ipv6_reply(client: socket.socket) -> None:
    reply = b"\x02\x10" + ipaddress.IPv6Address("2001:db8::99").packed + b"\x23\x29"
    with fake_beacon(constant(reply)) as (beacon, _):
        assert discover_endpoint(beacon, 0, client, 5.0) == ("2001:db8::99", 9001)


def test_s9_01_ipv4_mapped_reply_equals_ipv4(client: socket.socket) -> None:
    reply = b"\x02\x10" + ipaddress.IPv6Address("::ffff:198.51.100.99").packed + b"\x10\x00"
    with fake_beacon(constant(reply)) as (beacon, _):
        assert discover_endpoint(beacon, 0, client, 5.0) == ("198.51.100.99", 4096)


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (b"\x02\x04\xc6", "^invalid discover reply$"),
        (b"", "^invalid discover reply$"),
        (b"\x03\x04\xc6\x33\x64\x63\x10\x00", "^invalid discover reply$"),
        (b"\x02\x04\xc6\x33", "^invalid discover reply: too short$"),
        (b"\x02\x04\xc6\x33\x64\x63\x10", "^invalid discover reply: too short$"),
        (b"\x02\x05\xc6\x33\x64\x63\x10\x00\x00", "^invalid discover reply: bad IP length 5$"),
        (b"\x02\x10" + bytes(17), "^invalid discover reply: too short$"),
    ],
    ids=lambda v: v.hex() if isinstance(v, bytes) else None,
)
def test_s9_02_invalid_replies(client: socket.socket, reply: bytes, message: str) -> None:
    with fake_beacon(constant(reply)) as (beacon, _), pytest.raises(DiscoveryError, match=message):
        discover_endpoint(beacon, 0, client, 5.0)


def test_long_reply_truncated_to_64_bytes_and_trailing_ignored(client: socket.socket) -> None:
    with fake_beacon(constant(GOLDEN_REPLY + bytes(100))) as (beacon, _):
        assert discover_endpoint(beacon, 0, client, 5.0) == ("198.51.100.99", 4096)


def test_s9_02_d15_reply_from_non_beacon_source_is_ignored(client: socket.socket) -> None:
    """Upstream parsed any first datagram; natroute waits for the beacon's own (D15)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as spoofer:
        spoofer.bind(("127.0.0.1", 0))
        poison = bytes.fromhex("02 04 01020304 0001")
        spoofer.sendto(poison, client.getsockname())  # queued before the real reply
        with fake_beacon(constant(GOLDEN_REPLY)) as (beacon, _):
            assert discover_endpoint(beacon, 0, client, 5.0) == ("198.51.100.99", 4096)


def test_d43_what_the_beacon_sends_unasked_is_skipped(client: socket.socket) -> None:
    """A restarted node keeps its mapping, so a punch command and relayed frames
    can reach the socket before the reply; they are not the answer."""
    punch = bytes.fromhex("04 04 c6336401 0fa0")
    deliver = bytes.fromhex("06 01020304") + bytes(100)  # truncated to 64 bytes on read
    with fake_beacon(constant(GOLDEN_REPLY), before=[punch, deliver, punch]) as (beacon, _):
        assert discover_endpoint(beacon, 0, client, 5.0) == ("198.51.100.99", 4096)


def test_d43_only_unsolicited_kinds_are_skipped(client: socket.socket) -> None:
    """Anything else from the beacon is its answer, and fails at once when invalid."""
    sync = bytes.fromhex("07 00")
    with (
        fake_beacon(constant(GOLDEN_REPLY), before=[sync]) as (beacon, _),
        pytest.raises(DiscoveryError, match=r"^invalid discover reply$"),
    ):
        discover_endpoint(beacon, 0, client, 5.0)


@pytest.mark.parametrize("timeout", [0.0, -1.0])
def test_s9_03_expired_timeout_fails_at_once(client: socket.socket, timeout: float) -> None:
    client.settimeout(3.5)
    with fake_beacon(constant(GOLDEN_REPLY)) as (beacon, received):
        start = time.monotonic()
        with pytest.raises(DiscoveryError, match="discover reply: timed out"):
            discover_endpoint(beacon, 0, client, timeout)
        assert time.monotonic() - start < 1.0
    assert received == [bytes.fromhex("01 00000000")]  # the Discover still went out
    assert client.gettimeout() == 3.5


def test_s9_03_no_reply_times_out_and_restores_blocking(client: socket.socket) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        with pytest.raises(DiscoveryError, match="discover reply: timed out"):
            discover_endpoint(format_addr(silent.getsockname()), 0, client, 0.05)
    assert client.gettimeout() is None


def test_timeout_measured_with_injected_clock(client: socket.socket) -> None:
    """The deadline comes from the injected clock: a clock already past it fails at once."""
    clock = FakeClock(100.0)
    calls = 0

    def jumping() -> float:
        nonlocal calls
        calls += 1
        if calls > 1:
            clock.advance(10.0)
        return clock()

    with (
        fake_beacon(constant(GOLDEN_REPLY)) as (beacon, _),
        pytest.raises(DiscoveryError, match="timed out"),
    ):
        discover_endpoint(beacon, 0, client, 5.0, clock=jumping)
    assert client.gettimeout() is None


def test_send_failure(client: socket.socket) -> None:
    with pytest.raises(DiscoveryError, match=r"^send discover: "):
        discover_endpoint("127.0.0.1:0", 0, client, 1.0)
    with pytest.raises(DiscoveryError, match=r"^send discover: node ID out of range"):
        discover_endpoint("127.0.0.1:9", 2**32, client, 1.0)


def test_receive_failure(client: socket.socket) -> None:
    """ICMP port unreachable on a connected socket surfaces as a read error."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as gone:
        gone.bind(("127.0.0.1", 0))
        target = gone.getsockname()
    client.connect(target)
    with pytest.raises(DiscoveryError, match=r"^discover reply: .*refused"):
        discover_endpoint(format_addr(target), 0, client, 2.0)


def test_probe_beacon_rtt() -> None:
    with fake_beacon(constant(GOLDEN_REPLY)) as (beacon, received):
        rtt = probe_beacon_rtt(beacon, 7, 5.0)
    assert 0.0 < rtt < 5.0
    assert received == [bytes.fromhex("01 00000007")]


def test_probe_beacon_rtt_injected_clock() -> None:
    clock = FakeClock()
    with fake_beacon(constant(GOLDEN_REPLY)) as (beacon, _):
        assert probe_beacon_rtt(beacon, 7, 5.0, clock=clock) == 0.0


@pytest.mark.parametrize(
    "bad", ["not a host:port", "127.0.0.1", "", "[::1", "a" * 64 + ".example:9001"]
)
def test_probe_unresolvable_beacon(bad: str) -> None:
    with pytest.raises(ResolveError):
        probe_beacon_rtt(bad, 0, 1.0)


def test_probe_failure_is_discovery_error() -> None:
    with fake_beacon(constant(b"\x09")) as (beacon, _), pytest.raises(DiscoveryError):
        probe_beacon_rtt(beacon, 0, 5.0)


def test_probe_ipv6_loopback() -> None:
    if not socket.has_ipv6:  # depends on the host
        pytest.skip("no IPv6")
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as silent:
        try:
            silent.bind(("::1", 0))
        except OSError:  # depends on the host
            pytest.skip("no IPv6 loopback")
        with pytest.raises(DiscoveryError, match="timed out"):
            probe_beacon_rtt(format_addr(silent.getsockname()[:2]), 0, 0.05)
