"""A small async UDP client for shell tests (real sockets on loopback)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from types import TracebackType

from natroute.routing.types import Addr
from natroute.routing.wire import Discover, DiscoverReply, decode_message, encode_message

__all__ = ["UdpClient", "wait_until"]


class UdpClient:
    """A non-blocking UDP socket bound to an ephemeral loopback port."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.setblocking(False)
        name = self.sock.getsockname()
        self.addr: Addr = (name[0], name[1])

    def __enter__(self) -> UdpClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.sock.close()

    def send(self, data: bytes, dst: Addr) -> None:
        self.sock.sendto(data, dst)

    async def recv(self) -> tuple[bytes, Addr]:
        """The next datagram (waits at most 2 s)."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(2.0):
            data, addr = await loop.sock_recvfrom(self.sock, 70_000)
        return data, (addr[0], addr[1])

    async def register(self, node_id: int, beacon: Addr, extra: bytes = b"") -> Addr:
        """Discover at ``beacon``; returns the endpoint the beacon observed."""
        self.send(encode_message(Discover(node_id, extra)), beacon)
        data, _ = await self.recv()
        reply = decode_message(data)
        assert isinstance(reply, DiscoverReply)
        return reply.addr

    async def barrier(self, beacon: Addr) -> None:
        """Prove nothing else is in flight for us from ``beacon``.

        The beacon handles datagrams in arrival order, so when the reply to
        a discover sent now is the next thing received, nothing sent to the
        beacon before it produced a datagram for this client.
        """
        observed = await self.register(0, beacon)
        assert observed[1] == self.addr[1]


async def wait_until(condition: Callable[[], bool]) -> None:
    """Await ``condition()`` becoming true (within 2 s), checking every few ms."""
    deadline = time.monotonic() + 2.0
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)
