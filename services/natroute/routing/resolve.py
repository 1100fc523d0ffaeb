"""Resolving ``host:port`` beacon addresses to UDP endpoints (DNS allowed).

Kept apart so the Manager can take a resolver as a collaborator: tests pass
a table, production passes :func:`resolve_udp_addr`.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import TypeAlias

from .addr import canonical_ip, split_host_port
from .errors import ResolveError
from .types import Addr

__all__ = ["Resolver", "resolve_udp_addr"]

#: ``host:port`` → resolved address; raises ResolveError.
Resolver: TypeAlias = Callable[[str], Addr]


def resolve_udp_addr(hostport: str, family: int = socket.AF_UNSPEC) -> Addr:
    """Resolve ``host:port`` (or ``[v6]:port``) to an ``(ip, port)`` pair.

    IPv4 is preferred when a name has both families (as Go's resolver does
    for ``udp``). Service names are not accepted; the port must be numeric.

    Args:
        hostport: the address text; ``""`` is rejected (docs/decisions.md D18).
        family: restrict to ``AF_INET`` or ``AF_INET6`` (e.g. to match a socket).

    Raises:
        ResolveError: empty, malformed, or the name does not resolve.
    """
    if not hostport:
        raise ResolveError("resolve beacon: empty address")
    try:
        host, port = split_host_port(hostport)
    except ValueError as exc:
        raise ResolveError(f"resolve beacon: {exc}") from exc
    if not host:
        raise ResolveError(f"resolve beacon: missing host in {hostport!r}")
    try:
        infos = socket.getaddrinfo(host, port, family, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    except (OSError, UnicodeError) as exc:
        raise ResolveError(f"resolve beacon: {exc}") from exc
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    ip = str(infos[0][4][0])
    return canonical_ip(ip), port
