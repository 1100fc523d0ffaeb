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
from typing import Any, Final, cast

from natroute.routing.addr import split_host_port
from natroute.routing.types import Addr

__all__ = ["AppProtocol", "PeerProtocol", "PeerSocket", "bind_udp"]

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


class PeerProtocol(asyncio.DatagramProtocol):
    """Feeds datagrams of the peer socket to ``on_datagram``; errors to ``on_error``."""

    def __init__(
        self, on_datagram: Callable[[bytes, Addr], None], on_error: Callable[[OSError], None]
    ) -> None:
        self._on_datagram = on_datagram
        self._on_error = on_error

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            self._on_datagram(data, (addr[0], addr[1]))
        except Exception:  # a bug must not kill the receive loop; it is logged
            _log.exception("peer_datagram_failed")

    def error_received(self, exc: Exception) -> None:
        if isinstance(exc, OSError):
            self._on_error(exc)


class AppProtocol(asyncio.DatagramProtocol):
    """The local data plane: ``[dst u32][payload]`` in, ``[src u32][payload]`` out.

    Received payloads go to ``deliver_to`` or, when unset, to the address the
    application last sent from.
    """

    def __init__(self, on_send: Callable[[int, bytes], None], deliver_to: Addr | None) -> None:
        self._on_send = on_send
        self._deliver_to = deliver_to
        self._fixed = deliver_to is not None
        self._transport: asyncio.DatagramTransport | None = None
        self.dropped_short = 0
        self.dropped_no_app = 0
        self.received = 0
        self.delivered = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport is not a subclass of asyncio.DatagramTransport
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if len(data) < 4:
            self.dropped_short += 1
            return
        self.received += 1
        if not self._fixed:
            self._deliver_to = (addr[0], addr[1])
        try:
            self._on_send(int.from_bytes(data[:4], "big"), data[4:])
        except Exception:
            _log.exception("app_datagram_failed")

    def deliver(self, src: int, payload: bytes) -> None:
        """Hand a payload from node ``src`` to the application."""
        if self._transport is None or self._deliver_to is None:
            self.dropped_no_app += 1
            return
        self._transport.sendto(src.to_bytes(4, "big") + payload, self._deliver_to)
        self.delivered += 1
