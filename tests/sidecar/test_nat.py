"""NAT classification from two beacons' observations, and discovery on real loopback UDP."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from natroute.routing.types import Addr
from natroute.routing.wire import DiscoverReply, decode_message, encode_message
from natroute.sidecar.model import NatType
from natroute.sidecar.nat import NatReport, classify_nat, detect_nat

LOCAL: Addr = ("10.0.0.2", 4000)


@pytest.mark.parametrize(
    ("observed", "expected"),
    [
        ([], NatType.UNKNOWN),
        ([LOCAL], NatType.NONE),
        ([LOCAL, LOCAL], NatType.NONE),
        ([("198.18.100.2", 4000)], NatType.UNKNOWN),
        ([("198.18.100.2", 4000), ("198.18.100.2", 4000)], NatType.ENDPOINT_INDEPENDENT),
        ([("198.18.100.2", 4000), ("198.18.100.2", 51001)], NatType.ENDPOINT_DEPENDENT),
        ([("198.18.100.2", 4000), ("198.18.100.3", 4000)], NatType.ENDPOINT_DEPENDENT),
    ],
)
def test_classify_nat(observed: list[Addr], expected: NatType) -> None:
    assert classify_nat(LOCAL, observed) is expected


@contextmanager
def fake_beacon(reply_with: Addr | None) -> Iterator[str]:
    """A loopback beacon answering one Discover with ``reply_with`` (or the real source)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2.0)

    def serve() -> None:
        try:
            data, src = sock.recvfrom(100)
        except OSError:
            return
        decode_message(data)
        sock.sendto(encode_message(DiscoverReply(reply_with or (src[0], src[1]))), src)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        host, port = sock.getsockname()
        yield f"{host}:{port}"
    finally:
        thread.join(3.0)
        sock.close()


def _client() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock


def test_detect_nat_without_a_nat_on_loopback() -> None:
    with _client() as sock, fake_beacon(None) as b1, fake_beacon(None) as b2:
        report = detect_nat(sock, [b1, b2], timeout=2.0)
        me = sock.getsockname()
        assert report.nat_type is NatType.NONE
        assert report.local_addr == (me[0], me[1])
        assert report.observations == {b1: (me[0], me[1]), b2: (me[0], me[1])}
        assert report.public_endpoint == (me[0], me[1])


def test_detect_nat_symmetric_when_the_beacons_disagree() -> None:
    with (
        _client() as sock,
        fake_beacon(("198.18.100.4", 40001)) as b1,
        fake_beacon(("198.18.100.4", 40002)) as b2,
    ):
        report = detect_nat(sock, [b1, b2], timeout=2.0)
        assert report.nat_type is NatType.ENDPOINT_DEPENDENT
        assert report.public_endpoint == ("198.18.100.4", 40001)


def test_detect_nat_skips_silent_beacons_and_honours_the_limit() -> None:
    with _client() as sock, _client() as silent, fake_beacon(("198.18.100.2", 4000)) as b1:
        host, port = silent.getsockname()
        report = detect_nat(sock, [f"{host}:{port}", b1, "127.0.0.1:9"], timeout=0.3, limit=1)
        assert list(report.observations) == [b1]
        assert report.nat_type is NatType.UNKNOWN  # one observation cannot tell the mapping


def test_detect_nat_with_no_beacon_answering() -> None:
    with _client() as sock:
        assert detect_nat(sock, ["not-a-beacon"], timeout=0.1) == NatReport()
        assert NatReport().public_endpoint is None
