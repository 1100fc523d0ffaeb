"""Thin asyncio UDP shells: move datagrams and time between a socket and the core.

No protocol decision is made here. Each received datagram is handed to
:meth:`BeaconCore.handle_datagram` with the loop's monotonic time and the
datagrams it returns are sent; datagrams for stream sessions go to the
stream hub (``stream_send``). Addresses are passed to the core as
``(host, port)``; on an IPv6 (dual-stack) socket IPv4 destinations are sent
in their IPv4-mapped form.

Two shells do the same job:

* :class:`BatchedUdp` (the default on Linux) reads up to 64 datagrams per
  ``recvmmsg`` call when the socket is readable, feeds them all to the core
  and sends what came out with ``sendmmsg`` and UDP GSO
  (:mod:`.batchio`); a send the kernel cannot take now is dropped and
  counted, so nothing queues in user space;
* :class:`BeaconProtocol` is an asyncio datagram protocol, used where
  batching is not available (or turned off): a send that would grow the
  transport's backlog past ``send_buffer_limit`` bytes is dropped and
  counted (a bounded relay queue, never unbounded buffering), as is one the socket refuses.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Iterable
from typing import Any, cast

from natroute.routing.types import Addr

from .batchio import BatchSocket
from .core import STREAM_HOST, BeaconCore, Outgoing

__all__ = ["BatchedUdp", "BeaconProtocol"]

#: Batches read per readiness callback before yielding to the other tasks.
_ROUNDS = 16

_log = logging.getLogger(__name__)


class BeaconProtocol(asyncio.DatagramProtocol):
    """The beacon's UDP endpoint protocol."""

    def __init__(
        self, core: BeaconCore, clock: Callable[[], float], send_buffer_limit: int = 4 << 20
    ) -> None:
        """Wire a core to a (future) transport.

        Args:
            core: decides what to send.
            clock: monotonic seconds passed to the core as ``now``.
            send_buffer_limit: most bytes queued in the transport before
                further sends are dropped.
        """
        self.core = core
        self.clock = clock
        self.send_buffer_limit = send_buffer_limit
        #: Where datagrams for stream sessions go (the stream hub's ``send``).
        self.stream_send: Callable[[bytes, Addr], None] | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self._ipv6 = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDPTransport quacks like asyncio.DatagramTransport without subclassing it.
        self.transport = cast(asyncio.DatagramTransport, transport)
        sock = transport.get_extra_info("socket")
        self._ipv6 = sock is not None and sock.family == socket.AF_INET6

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        # IPv6 sources come as (host, port, flowinfo, scope_id): keep host and port.
        out = self.core.handle_datagram(data, (addr[0], addr[1]), self.clock())
        if out:
            self.send(out)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors for earlier sends (e.g. a node went away): counted, not fatal.
        self.core.note_send_failed()
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug("beacon_socket_error", extra={"error": str(exc)})

    def send(self, out: Iterable[Outgoing]) -> None:
        """Send datagrams the core returned; failures are counted by the core."""
        transport = self.transport
        for datagram, dst in out:
            if dst[0] == STREAM_HOST:
                if self.stream_send is None:
                    self.core.note_send_failed()
                else:
                    self.stream_send(datagram, dst)
                continue
            if transport is None or _backlog(transport) > self.send_buffer_limit:
                self.core.note_send_failed()
                continue
            target = self._target(dst)
            if target is None:
                self.core.note_send_failed()
                continue
            try:
                transport.sendto(datagram, target)
            except (OSError, ValueError):
                self.core.note_send_failed()

    def _target(self, dst: Addr) -> Addr | None:
        host = dst[0]
        if self._ipv6:
            return dst if ":" in host else (f"::ffff:{host}", dst[1])
        return None if ":" in host else dst


def _backlog(transport: asyncio.DatagramTransport) -> int:
    """Bytes queued in the transport (asyncio's and uvloop's both report it)."""
    size: int = transport.get_write_buffer_size()  # type: ignore[attr-defined]
    return size


class BatchedUdp:
    """The beacon's UDP endpoint on batched system calls (see :mod:`.batchio`)."""

    def __init__(self, core: BeaconCore, clock: Callable[[], float], batch: BatchSocket) -> None:
        """Wire a core to a batched socket (reading starts with :meth:`start`).

        Args:
            core: decides what to send.
            clock: monotonic seconds passed to the core as ``now``.
            batch: the socket's batched view.
        """
        self.core = core
        self.clock = clock
        self.batch = batch
        #: Where datagrams for stream sessions go (the stream hub's ``send``).
        self.stream_send: Callable[[bytes, Addr], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fd = -1
        self._udp: list[Outgoing] = []

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran (or before :meth:`start`)."""
        return self._loop is None

    def start(self, sock: socket.socket) -> None:
        """Start reading ``sock`` (the socket ``batch`` was made for) on the running loop."""
        self._loop = asyncio.get_running_loop()
        self._fd = sock.fileno()
        self._loop.add_reader(self._fd, self._readable)

    def close(self) -> None:
        """Stop reading (the caller closes the socket)."""
        if self._loop is not None:
            self._loop.remove_reader(self._fd)
            self._loop = None

    def _readable(self) -> None:
        batch, handle, clock = self.batch, self.core.handle_datagram, self.clock
        out = self._udp
        for _ in range(_ROUNDS):
            try:
                n = batch.recv()
            except OSError as exc:
                self.core.note_send_failed()  # an error queued by an earlier send
                if _log.isEnabledFor(logging.DEBUG):
                    _log.debug("beacon_socket_error", extra={"error": str(exc)})
                continue
            if n == 0:
                return
            now = clock()
            for data, addr in batch.received(n):
                replies = handle(data, addr, now)
                if replies:
                    out.extend(replies)
            if out:
                self.send(out)
                out.clear()
            if n < batch.size:
                return

    def send(self, out: Iterable[Outgoing]) -> None:
        """Send datagrams the core returned; failures are counted by the core."""
        udp: list[Outgoing] = []
        for item in out:
            if item[1][0] != STREAM_HOST:
                udp.append(item)
            elif self.stream_send is None:
                self.core.note_send_failed()
            else:
                self.stream_send(*item)
        if not udp:
            return
        if self._loop is None:
            self.core.note_send_failed(len(udp))
            return
        result = self.batch.send(udp)
        if result.dropped:
            self.core.note_send_failed(result.dropped)
