"""Blocking beacon helpers: endpoint discovery and the RTT probe.

Behaviour: docs/protocol.md, "Endpoint discovery and the RTT probe".

The one place in ``routing`` that waits on a socket. Used before the
long-lived receive loop takes over the node's socket, and on throw-away
sockets for RTT probes. Unlike upstream, only a reply from the beacon's own
address is accepted (docs/decisions.md D15: a stray datagram cannot poison our public
endpoint), and the probe's RTT excludes DNS time (D25).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from .addr import addr_equal, format_addr
from .errors import DiscoveryError, ResolveError, WireError
from .resolve import resolve_udp_addr
from .types import Addr
from .wire import (
    MSG_DISCOVER_REPLY,
    MSG_PUNCH_COMMAND,
    MSG_RELAY_DELIVER,
    Discover,
    decode_endpoint,
    encode_message,
)

__all__ = [
    "DISCOVER_REPLY_BUFSIZE",
    "discover_endpoint",
    "parse_discover_reply",
    "probe_beacon_rtt",
]

#: Receive buffer for the reply ("Timers and caps"); longer datagrams are truncated.
DISCOVER_REPLY_BUFSIZE = 64

#: What a beacon sends a registered node unasked: never an answer to our Discover,
#: so skipped while waiting for it (docs/decisions.md D43).
_UNSOLICITED = frozenset({MSG_PUNCH_COMMAND, MSG_RELAY_DELIVER})


def parse_discover_reply(data: bytes) -> Addr:
    """The endpoint a DiscoverReply carries (no I/O; the asyncio probe uses it too).

    Raises:
        DiscoveryError: not a DiscoverReply, a bad IP length, or too short.
    """
    if len(data) < 4 or data[0] != MSG_DISCOVER_REPLY:
        raise DiscoveryError("invalid discover reply")
    iplen = data[1]
    if iplen not in (4, 16):
        raise DiscoveryError(f"invalid discover reply: bad IP length {iplen}")
    try:
        return decode_endpoint(data[1:])
    except WireError as exc:
        raise DiscoveryError("invalid discover reply: too short") from exc


def discover_endpoint(
    beacon_addr: str,
    node_id: int,
    sock: socket.socket,
    timeout: float,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> Addr:
    """Ask a beacon which public UDP endpoint it sees for ``sock``.

    Sends a 5-byte Discover and waits for the DiscoverReply from the beacon's
    address; datagrams from anywhere else are ignored, and so are the punch
    commands and relayed frames the beacon sends a node that is already
    registered (the socket may still be the node's). The socket's previous
    timeout is restored afterwards.

    Args:
        beacon_addr: ``host:port`` of the beacon (DNS allowed).
        node_id: the ID to put in the Discover (0 before registration).
        sock: the UDP socket whose public mapping we want.
        timeout: seconds to wait for the reply; ``<= 0`` fails at once.
        clock: monotonic clock, injectable for tests.

    Returns:
        The ``(ip, port)`` the beacon observed.

    Raises:
        ResolveError: ``beacon_addr`` does not resolve.
        DiscoveryError: the send failed, no valid reply came in time.
    """
    deadline = clock() + timeout
    target = resolve_udp_addr(beacon_addr, sock.family)
    try:
        sock.sendto(encode_message(Discover(node_id)), target)
    except (OSError, WireError) as exc:
        raise DiscoveryError(f"send discover: {exc}") from exc
    previous = sock.gettimeout()
    try:
        while True:
            remaining = deadline - clock()
            if remaining <= 0:
                raise DiscoveryError("discover reply: timed out")
            sock.settimeout(remaining)
            try:
                data, src = sock.recvfrom(DISCOVER_REPLY_BUFSIZE)
            except TimeoutError as exc:
                raise DiscoveryError("discover reply: timed out") from exc
            except OSError as exc:
                raise DiscoveryError(f"discover reply: {exc}") from exc
            if not addr_equal((src[0], src[1]), target):
                continue
            if data and data[0] in _UNSOLICITED:
                continue
            return parse_discover_reply(data)
    finally:
        sock.settimeout(previous)


def probe_beacon_rtt(
    beacon_addr: str,
    node_id: int,
    timeout: float,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> float:
    """Round-trip time to a beacon, measured on a fresh ephemeral socket.

    The name is resolved before the clock starts, so DNS time is not counted.

    Raises:
        ResolveError: ``beacon_addr`` does not resolve.
        DiscoveryError: the probe socket could not be opened, or no reply in time.
    """
    target = resolve_udp_addr(beacon_addr)
    family = socket.AF_INET6 if ":" in target[0] else socket.AF_INET
    try:
        sock = socket.socket(family, socket.SOCK_DGRAM)
    except OSError as exc:  # pragma: no cover - out of file descriptors
        raise DiscoveryError(f"probe socket: {exc}") from exc
    with sock:
        start = clock()
        try:
            discover_endpoint(format_addr(target), node_id, sock, timeout, clock=clock)
        except ResolveError as exc:  # pragma: no cover - a literal always resolves
            raise DiscoveryError(f"probe: {exc}") from exc
        return clock() - start
