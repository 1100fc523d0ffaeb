"""The one UDP socket factory of the services (beacon listen socket, sidecar sockets).

Light on purpose: the standard library and the routing core's address helpers
only, so the beacon can bind before anything heavy is loaded (``beacon/early.py``).
"""

from __future__ import annotations

import contextlib
import logging
import socket
from typing import Final

from natroute.routing.addr import split_host_port

__all__ = ["IPV6_RECVERR", "IP_RECVERR", "bind_udp", "size_buffers"]

_log = logging.getLogger(__name__)

# linux/in.h and linux/in6.h; not exported by the socket module.
IP_RECVERR: Final = 11
IPV6_RECVERR: Final = 25
# asm-generic/socket.h; not exported by the socket module.
_SO_SNDBUFFORCE: Final = 32
_SO_RCVBUFFORCE: Final = 33


def bind_udp(
    hostport: str, *, recverr: bool = False, buffer_size: int | None = None
) -> socket.socket:
    """A non-blocking UDP socket bound to ``host:port`` (port 0: any free port).

    The host is an IP literal or a name; the IPv6 wildcard is dual-stack.

    Args:
        hostport: ``host:port`` or ``[v6]:port``.
        recverr: turn on Linux ``IP_RECVERR`` / ``IPV6_RECVERR``: the kernel
            queues each ICMP error with the destination it concerns.
        buffer_size: ``SO_RCVBUF`` and ``SO_SNDBUF`` in bytes (None: the
            system's default).

    Raises:
        OSError: the address cannot be resolved or bound.
        ValueError: not ``host:port``.
    """
    host, port = split_host_port(hostport)
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)
    family, _, _, _, sockaddr = infos[0]
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        if buffer_size is not None:
            size_buffers(sock, buffer_size)
        sock.bind(sockaddr)
        sock.setblocking(False)
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


def size_buffers(sock: socket.socket, size: int) -> tuple[int, int]:
    """Ask for ``size``-byte receive and send buffers; returns what the kernel granted.

    With CAP_NET_ADMIN the ``*BUFFORCE`` options pass ``net.core.rmem_max``/
    ``wmem_max``; without it the plain options are capped there. Deep
    buffers ride out the moments the process is not scheduled, which is
    where a busy data plane loses datagrams (README, "Figures").
    """
    for force, plain in (
        (_SO_RCVBUFFORCE, socket.SO_RCVBUF),
        (_SO_SNDBUFFORCE, socket.SO_SNDBUF),
    ):
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, size)
        except OSError:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, plain, size)
    # Linux reports twice the figure asked for (it counts its bookkeeping).
    return (
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2,
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) // 2,
    )
