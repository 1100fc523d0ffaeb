"""Batched UDP I/O on real loopback sockets: recvmmsg, sendmmsg and UDP GSO."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from natroute.beacon.batchio import GSO_MAX_SEGMENT, BatchSocket
from natroute.routing.types import Addr


def _udp(host: str = "127.0.0.1") -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((host, 0))
    sock.setblocking(False)
    return sock


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = _udp(), _udp()
    yield a, b
    a.close()
    b.close()


def batch_of(sock: socket.socket, **kw: int | bool) -> BatchSocket:
    batch = BatchSocket.create(sock, **kw)  # type: ignore[arg-type]
    assert batch is not None, "recvmmsg/sendmmsg are available on Linux"
    return batch


def drain(sock: socket.socket) -> list[tuple[bytes, Addr]]:
    out: list[tuple[bytes, Addr]] = []
    while True:
        try:
            data, addr = sock.recvfrom(70_000)
        except BlockingIOError:
            return out
        out.append((data, (addr[0], addr[1])))


def test_receive_a_batch_with_sources(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    batch = batch_of(b, batch=4)
    assert batch.recv() == 0  # nothing waiting
    for i in range(6):
        a.sendto(bytes([i]) * (i + 1), b.getsockname())
    first = batch.recv()
    assert first == 4
    got = list(batch.received(first))
    rest = batch.recv()
    got += list(batch.received(rest))
    assert [data for data, _ in got] == [bytes([i]) * (i + 1) for i in range(6)]
    assert {addr for _, addr in got} == {a.getsockname()}


def test_gso_runs_arrive_as_separate_datagrams_in_order(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    batch = batch_of(a)
    dst: Addr = b.getsockname()
    out = [(bytes([i]) * 100, dst) for i in range(20)] + [(b"tail", dst)]
    result = batch.send(out)
    assert (result.sent, result.dropped) == (21, 0)
    assert [data for data, _ in drain(b)] == [data for data, _ in out]


def test_gro_receive_cuts_coalesced_runs_back_into_datagrams(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    sender, receiver = batch_of(a), batch_of(b, gro=True, batch=4)
    assert receiver.gro, "UDP GRO is available on this kernel"
    dst: Addr = b.getsockname()
    # two GSO runs, then two lone datagrams
    out = [(bytes([i]) * 100, dst) for i in range(30)]
    out += [(bytes([100 + i]) * 60, dst) for i in range(9)] + [(b"tail", dst)]
    out.append((b"x" * 700, dst))
    assert sender.send(out).sent == len(out)
    got: list[tuple[bytes, Addr]] = []
    messages = 0
    while n := receiver.recv():
        messages += n
        got += receiver.received(n)
    assert [data for data, _ in got] == [data for data, _ in out]
    assert {addr for _, addr in got} == {a.getsockname()}
    # loopback keeps a GSO run whole for a GRO socket: four buffers, 41 datagrams
    assert messages == 4


def test_kernel_refusing_gso_is_answered_with_plain_sends(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """More segments than the kernel takes in one message: EINVAL, then plain sends."""
    a, b = pair
    batch = batch_of(a, gso_segments=1000)
    out = [(b"x", b.getsockname())] * 300
    result = batch.send(out)
    assert (result.sent, result.dropped) == (300, 0)
    assert result.resent >= 1
    assert len(drain(b)) == 300
    assert batch.gso  # EINVAL is about this message only


def test_large_and_mixed_datagrams_and_bad_destinations(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    batch = batch_of(a, batch=3)
    dst: Addr = b.getsockname()
    big = b"B" * (GSO_MAX_SEGMENT + 1)
    out = [
        (big, dst),
        (big, dst),
        (b"s", ("127.0.0.1", 0)),  # refused by the kernel
        (b"s", ("not-an-ip", 5)),  # cannot be addressed
        (b"s", ("::1", 5)),  # IPv6 on an IPv4 socket
        (b"ok", dst),
        (b"ok2", dst),
    ]
    result = batch.send(out)
    assert (result.sent, result.dropped) == (4, 3)
    assert [data for data, _ in drain(b)] == [big, big, b"ok", b"ok2"]


def test_gso_off_sends_one_message_per_datagram(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    batch = batch_of(a, gso=False)
    result = batch.send([(b"y" * 10, b.getsockname())] * 5)
    assert result.sent == 5
    assert len(drain(b)) == 5


def test_dual_stack_socket_maps_ipv4_both_ways() -> None:
    try:
        server = _udp("::")
    except OSError:
        pytest.skip("no IPv6 on this machine")
    client = _udp()
    try:
        batch = batch_of(server)
        port = server.getsockname()[1]
        client.sendto(b"hi", ("127.0.0.1", port))
        assert batch.recv() == 1
        ((data, addr),) = batch.received(1)
        assert (data, addr) == (b"hi", ("::ffff:127.0.0.1", client.getsockname()[1]))
        result = batch.send([(b"back", ("127.0.0.1", client.getsockname()[1]))])
        assert result.sent == 1
        assert drain(client) == [(b"back", ("127.0.0.1", port))]
    finally:
        server.close()
        client.close()


def test_only_udp_sockets_are_batched() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        assert BatchSocket.create(tcp) is None
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as unix:
        assert BatchSocket.create(unix) is None
