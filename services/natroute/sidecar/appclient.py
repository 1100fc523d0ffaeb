"""A tiny client of the sidecar's local data plane, and its wire format.

The application sends ``[dst node ID u32 big-endian][payload]`` to the
sidecar's data-plane port (``--app-listen``, default 127.0.0.1:4100) and
receives ``[src node ID u32][payload]`` back. Example::

    from natroute.sidecar.appclient import AppClient

    with AppClient(("127.0.0.1", 4100)) as app:
        app.send(0x1234ABCD, b"hello")
        src, payload = app.recv(timeout=2.0)

Without ``--app-deliver`` the sidecar delivers to the address the
application last sent from, so send once before expecting deliveries.
"""

from __future__ import annotations

import asyncio
import socket
from types import TracebackType
from typing import Self

from natroute.routing.types import Addr

__all__ = ["AppClient", "AsyncAppClient", "decode_app", "encode_app"]


def encode_app(node_id: int, payload: bytes) -> bytes:
    """``[node ID u32][payload]``."""
    return node_id.to_bytes(4, "big") + payload


def decode_app(data: bytes) -> tuple[int, bytes]:
    """Inverse of :func:`encode_app`.

    Raises:
        ValueError: fewer than 4 bytes.
    """
    if len(data) < 4:
        raise ValueError("data-plane datagram shorter than 4 bytes")
    return int.from_bytes(data[:4], "big"), data[4:]


class AppClient:
    """Blocking data-plane client bound to an ephemeral loopback port."""

    def __init__(self, sidecar: Addr, bind: Addr = ("127.0.0.1", 0)) -> None:
        self.sidecar = sidecar
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(bind)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()

    def send(self, dst: int, payload: bytes) -> None:
        """Send ``payload`` to node ``dst``."""
        self.sock.sendto(encode_app(dst, payload), self.sidecar)

    def recv(self, timeout: float | None = None) -> tuple[int, bytes]:
        """Wait for the next delivery: ``(src node ID, payload)``.

        Raises:
            TimeoutError: nothing arrived in time.
        """
        self.sock.settimeout(timeout)
        data, _ = self.sock.recvfrom(65535)
        return decode_app(data)


class AsyncAppClient:
    """The same client for asyncio code (tests running sidecars in-process)."""

    def __init__(self, sidecar: Addr, bind: Addr = ("127.0.0.1", 0)) -> None:
        self.sidecar = sidecar
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(bind)
        self.sock.setblocking(False)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.sock.close()

    async def send(self, dst: int, payload: bytes) -> None:
        """Send ``payload`` to node ``dst`` (a local UDP send does not block)."""
        self.sock.sendto(encode_app(dst, payload), self.sidecar)

    async def recv(self) -> tuple[int, bytes]:
        """The next delivery (wrap in ``asyncio.timeout`` to bound the wait).

        Waits with ``add_reader``, which every event loop (uvloop included)
        implements, unlike ``sock_recvfrom``.
        """
        loop = asyncio.get_running_loop()
        while True:
            try:
                data, _ = self.sock.recvfrom(65535)
            except BlockingIOError:
                pass
            else:
                return decode_app(data)
            readable: asyncio.Future[None] = loop.create_future()
            fd = self.sock.fileno()
            loop.add_reader(fd, _wake, readable)
            try:
                await readable
            finally:
                loop.remove_reader(fd)


def _wake(readable: asyncio.Future[None]) -> None:
    if not readable.done():
        readable.set_result(None)
