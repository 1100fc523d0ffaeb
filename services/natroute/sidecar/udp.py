"""The sidecar's UDP shells: the peer socket (with ICMP attribution) and the data plane.

No protocol decision lives here: bytes go to the :class:`~.node.Node` and
back. The peer socket is a plain non-blocking UDP socket, so the Manager sees
send errors synchronously. With Linux ``IP_RECVERR`` the kernel queues every
ICMP error with the original destination; :class:`PeerSocket` drains that
queue and reports each error for the peer it concerns (spec §10 D20) rather
than letting it fail whichever send comes next.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import struct
from collections.abc import Callable
from typing import Final

from natroute.routing.addr import split_host_port
from natroute.routing.types import Addr

__all__ = ["AppEndpoint", "DatagramPump", "PeerSocket", "bind_udp"]

_log = logging.getLogger(__name__)

# linux/in.h and linux/in6.h; not exported by the socket module.
IP_RECVERR: Final = 11
IPV6_RECVERR: Final = 25
_ICMP_ERRNOS: Final = frozenset({errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH})
_EE_ERRNO = struct.Struct("=I")


def bind_udp(hostport: str, *, recverr: bool = False) -> socket.socket:
    """A UDP socket bound to ``host:port`` (port 0: any), optionally with IP_RECVERR."""
    host, port = split_host_port(hostport)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.bind((host, port))
        if recverr:
            level, opt = (
                (socket.IPPROTO_IPV6, IPV6_RECVERR)
                if family == socket.AF_INET6
                else (socket.IPPROTO_IP, IP_RECVERR)
            )
            try:
                sock.setsockopt(level, opt, 1)
            except OSError:  # pragma: no cover - not Linux
                _log.warning("ip_recverr_unavailable")
    except BaseException:
        sock.close()
        raise
    return sock


class PeerSocket:
    """The node's socket as a ``SocketSender``; drains ICMP errors to ``on_icmp``."""

    def __init__(self, sock: socket.socket, on_icmp: Callable[[Addr, OSError], None]) -> None:
        self._sock = sock
        self._on_icmp = on_icmp
        self.errors_attributed = 0

    @property
    def sock(self) -> socket.socket:
        """The underlying socket."""
        return self._sock

    def sendto(self, data: bytes, addr: Addr, /) -> int:
        """Send; a pending ICMP error of an earlier datagram is drained, then retried once."""
        try:
            return self._sock.sendto(data, addr)
        except OSError as exc:
            if exc.errno in _ICMP_ERRNOS and self.drain_errors():
                return self._sock.sendto(data, addr)
            raise

    def drain_errors(self) -> int:
        """Read the socket's error queue; report each error with its destination."""
        count = 0
        while True:
            try:
                _, ancdata, _, dst = self._sock.recvmsg(64, 512, socket.MSG_ERRQUEUE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            code = 0
            for _level, _type, cdata in ancdata:
                if len(cdata) >= _EE_ERRNO.size:
                    code = _EE_ERRNO.unpack_from(cdata)[0]
            if dst and code:
                count += 1
                self.errors_attributed += 1
                self._on_icmp((dst[0], dst[1]), OSError(code, errno.errorcode.get(code, "?")))
        return count


class DatagramPump:
    """Reads a non-blocking UDP socket from the event loop, in batches.

    ``loop.add_reader`` instead of a datagram transport: one wake-up reads
    up to ``batch`` datagrams. An ``IP_RECVERR`` error makes the descriptor
    report POLLERR; the stdlib selector loop then wakes the reader, whose
    ``recvfrom`` raises the error, and it goes to ``on_error`` (which drains
    the error queue). A callback that raises is logged, never fatal.
    """

    def __init__(
        self,
        sock: socket.socket,
        on_datagram: Callable[[bytes, Addr], None],
        on_error: Callable[[OSError], None],
        batch: int = 64,
    ) -> None:
        self.sock = sock
        self._on_datagram = on_datagram
        self._on_error = on_error
        self._batch = batch
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """Start reading on the running loop."""
        self.sock.setblocking(False)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.sock.fileno(), self.read_ready)

    def close(self) -> None:
        """Stop reading and close the socket."""
        if self._loop is not None and self.sock.fileno() >= 0:
            self._loop.remove_reader(self.sock.fileno())
        self._loop = None
        self.sock.close()

    def read_ready(self) -> None:
        """Read what is there (at most one batch)."""
        recvfrom = self.sock.recvfrom
        for _ in range(self._batch):
            try:
                data, addr = recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._on_error(exc)
                continue
            try:
                self._on_datagram(data, (addr[0], addr[1]))
            except Exception:  # a bug must not kill the receive loop; it is logged
                _log.exception("datagram_handler_failed")


class AppEndpoint:
    """The local data plane: ``[dst u32][payload]`` in, ``[src u32][payload]`` out.

    Received payloads go to ``deliver_to`` or, when unset, to the address the
    application last sent from.
    """

    def __init__(
        self,
        sock: socket.socket,
        on_send: Callable[[int, bytes], None],
        deliver_to: Addr | None,
    ) -> None:
        self.sock = sock
        self._on_send = on_send
        self._deliver_to = deliver_to
        self._fixed = deliver_to is not None
        self._pump = DatagramPump(sock, self._received, self._error)
        self.dropped_short = 0
        self.dropped_no_app = 0
        self.dropped_busy = 0
        self.received = 0
        self.delivered = 0

    @property
    def addr(self) -> Addr:
        """The bound data-plane address."""
        name = self.sock.getsockname()
        return str(name[0]), int(name[1])

    def start(self) -> None:
        """Start reading on the running loop."""
        self._pump.start()

    def close(self) -> None:
        """Stop reading and close the socket."""
        self._pump.close()

    def _error(self, exc: OSError) -> None:
        _log.debug("app_socket_error", extra={"error": str(exc)})

    def _received(self, data: bytes, addr: Addr) -> None:
        if len(data) < 4:
            self.dropped_short += 1
            return
        self.received += 1
        if not self._fixed:
            self._deliver_to = addr
        self._on_send(int.from_bytes(data[:4], "big"), data[4:])

    def deliver(self, src: int, payload: bytes) -> None:
        """Hand a payload from node ``src`` to the application."""
        if self._deliver_to is None:
            self.dropped_no_app += 1
            return
        try:
            self.sock.sendto(src.to_bytes(4, "big") + payload, self._deliver_to)
        except OSError:  # buffer full, or the application went away
            self.dropped_busy += 1
            return
        self.delivered += 1
