"""Resolving ``host:port`` beacon addresses to UDP endpoints (DNS allowed).

Kept apart so the Manager can take a resolver as a collaborator: tests pass
a table, production passes :func:`resolve_udp_addr`. The rules (what a
beacon address may look like, which answer wins) are the pure
:func:`lookup_target` and :func:`pick_resolved`, so an asyncio shell that
looks names up without blocking applies the same ones.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

from .addr import canonical_ip, split_host_port
from .errors import ResolveError
from .types import Addr

__all__ = ["Resolver", "lookup_target", "pick_resolved", "resolve_udp_addr"]

#: ``host:port`` → resolved address; raises ResolveError.
Resolver: TypeAlias = Callable[[str], Addr]


def lookup_target(hostport: str) -> tuple[str, int]:
    """The host and port to look up for a beacon address (no I/O).

    Raises:
        ResolveError: empty (docs/decisions.md D18), malformed, or no host.
    """
    if not hostport:
        raise ResolveError("resolve beacon: empty address")
    try:
        host, port = split_host_port(hostport)
    except ValueError as exc:
        raise ResolveError(f"resolve beacon: {exc}") from exc
    if not host:
        raise ResolveError(f"resolve beacon: missing host in {hostport!r}")
    return host, port


def pick_resolved(infos: Sequence[tuple[int, int, int, str, tuple[Any, ...]]], port: int) -> Addr:
    """The address to use among ``getaddrinfo`` answers: IPv4 first, as Go does for ``udp``.

    Raises:
        ResolveError: no answer at all.
    """
    if not infos:
        raise ResolveError("resolve beacon: no address")
    ip = next((i for i in infos if i[0] == socket.AF_INET), infos[0])[4][0]
    return canonical_ip(str(ip)), port


def resolve_udp_addr(hostport: str, family: int = socket.AF_UNSPEC) -> Addr:
    """Resolve ``host:port`` (or ``[v6]:port``) to an ``(ip, port)`` pair.

    Blocks on DNS; an asyncio caller looks the name up with ``loop.getaddrinfo``
    between :func:`lookup_target` and :func:`pick_resolved` instead.
    IPv4 is preferred when a name has both families (as Go's resolver does
    for ``udp``). Service names are not accepted; the port must be numeric.

    Args:
        hostport: the address text; ``""`` is rejected (docs/decisions.md D18).
        family: restrict to ``AF_INET`` or ``AF_INET6`` (e.g. to match a socket).

    Raises:
        ResolveError: empty, malformed, or the name does not resolve.
    """
    host, port = lookup_target(hostport)
    try:
        infos = socket.getaddrinfo(host, port, family, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    except (OSError, UnicodeError) as exc:
        raise ResolveError(f"resolve beacon: {exc}") from exc
    return pick_resolved(infos, port)
