"""The one UDP socket factory (``natroute._service.udp.bind_udp``), on 127.0.0.1 / ::1."""

from __future__ import annotations

import socket

import pytest

from natroute._service.udp import IP_RECVERR, IPV6_RECVERR, bind_udp


def test_ipv4_non_blocking_without_recverr_unless_asked() -> None:
    with bind_udp("127.0.0.1:0") as plain:
        assert plain.family == socket.AF_INET
        assert plain.getsockname()[0] == "127.0.0.1"
        assert plain.getblocking() is False
        assert plain.getsockopt(socket.IPPROTO_IP, IP_RECVERR) == 0
    with bind_udp("127.0.0.1:0", recverr=True) as asked:
        assert asked.getsockopt(socket.IPPROTO_IP, IP_RECVERR) == 1


def test_ipv6_with_recverr() -> None:
    with bind_udp("[::1]:0", recverr=True) as sock:
        assert sock.family == socket.AF_INET6
        assert sock.getsockname()[0] == "::1"
        assert sock.getsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR) == 1


def test_buffers_names_and_the_dual_stack_wildcard() -> None:
    with bind_udp("localhost:0", buffer_size=1 << 20) as sock:
        # Linux doubles the value it was given (bookkeeping overhead).
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= 1 << 20
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) >= 1 << 20
    with bind_udp("[::]:0") as wild:
        assert wild.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0
        port = wild.getsockname()[1]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as v4:
            v4.sendto(b"over IPv4", ("127.0.0.1", port))
        wild.settimeout(2.0)
        assert wild.recvfrom(64)[0] == b"over IPv4"


def test_bad_addresses() -> None:
    with pytest.raises(OSError):  # noqa: PT011 - EADDRNOTAVAIL or similar
        bind_udp("192.0.2.1:0")
    with pytest.raises(ValueError, match="missing port"):
        bind_udp("127.0.0.1")
    with bind_udp("127.0.0.1:0") as taken, pytest.raises(OSError, match="in use"):
        bind_udp(f"127.0.0.1:{taken.getsockname()[1]}")
