"""Candidate endpoints: where a peer might be reached directly, and which are usable.

A node offers its peers a short list of candidates (docs/protocol.md,
"Candidates and checks"): *host* candidates (its interface addresses with the
peer socket's port), *server-reflexive* ones (what the beacons observed) and,
learnt on the fly, *peer-reflexive* ones (the source of an authenticated probe
from an address nobody announced). Every remote candidate passes
:func:`address_problem` first: nothing is ever sent to a multicast,
broadcast, unspecified or (outside loopback worlds) loopback or link-local
address, nor to one of our own sockets (:class:`SelfAddrs`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Final

from natroute.routing.addr import canonical_ip
from natroute.routing.types import Addr

__all__ = [
    "MAX_LOCAL_CANDIDATES",
    "MAX_REMOTE_CANDIDATES",
    "Candidate",
    "CandidateKind",
    "SelfAddrs",
    "address_problem",
]

#: Most candidates a node publishes (registry and CALL_ME_MAYBE).
MAX_LOCAL_CANDIDATES: Final = 8
#: Most candidates kept per peer, peer-reflexive ones included.
MAX_REMOTE_CANDIDATES: Final = 16

_BROADCAST: Final = ipaddress.IPv4Address("255.255.255.255")


class CandidateKind(Enum):
    """Where a candidate comes from; also the tie-break order (host first)."""

    HOST = "host"
    SRFLX = "srflx"
    PRFLX = "prflx"

    @property
    def rank(self) -> int:
        """Lower is preferred when two candidates answer equally fast."""
        return _RANK[self]


_RANK: Final = {CandidateKind.HOST: 0, CandidateKind.SRFLX: 1, CandidateKind.PRFLX: 2}


@dataclass(frozen=True, slots=True)
class Candidate:
    """One candidate endpoint (canonical IP text and port) and its kind."""

    addr: Addr
    kind: CandidateKind


def address_problem(addr: Addr, *, allow_loopback: bool = False) -> str | None:
    """Why ``addr`` must never be a destination, or None when it may be one.

    Args:
        addr: an IP literal and a port.
        allow_loopback: loopback and link-local are fine (a world on one host).

    Returns:
        A short reason (``"not_ip"``, ``"port_zero"``, ``"unspecified"``,
        ``"multicast"``, ``"broadcast"``, ``"loopback"``, ``"link_local"``,
        ``"reserved"``), or None.
    """
    host, port = addr
    if port <= 0 or port > 0xFFFF:
        return "port_zero"
    try:
        ip = ipaddress.ip_address(canonical_ip(host))
    except ValueError:
        return "not_ip"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_multicast:
        return "multicast"
    if ip == _BROADCAST:
        return "broadcast"
    if ip.is_loopback:
        return None if allow_loopback else "loopback"
    if ip.is_link_local:
        return None if allow_loopback else "link_local"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _IPV4_RESERVED:
        return "reserved"
    return None


_IPV4_RESERVED: Final = ipaddress.IPv4Network("240.0.0.0/4")


class SelfAddrs:
    """The addresses of our own sockets: never a destination (docs/protocol.md).

    A socket bound to a specific address is that address; one bound to the
    unspecified address is every local address (and loopback) with its port.

    Args:
        sockets: the bound addresses of the node's sockets (peer, data plane, admin).
        local_ips: the host's interface addresses (for wildcard-bound sockets).
    """

    def __init__(self, sockets: Iterable[Addr] = (), local_ips: Iterable[str] = ()) -> None:
        self._exact: set[Addr] = set()
        self._any_ports: set[int] = set()
        self._local_ips: set[str] = {canonical_ip(ip) for ip in local_ips}
        for addr in sockets:
            self.add(addr)

    def add(self, addr: Addr) -> None:
        """Record one more bound socket."""
        ip = canonical_ip(addr[0])
        if ip in ("0.0.0.0", "::"):
            self._any_ports.add(addr[1])
        else:
            self._exact.add((ip, addr[1]))

    def discard(self, addr: Addr) -> None:
        """Forget a socket that was closed."""
        ip = canonical_ip(addr[0])
        if ip in ("0.0.0.0", "::"):
            self._any_ports.discard(addr[1])
        else:
            self._exact.discard((ip, addr[1]))

    def set_local_ips(self, ips: Iterable[str]) -> None:
        """Replace the host's interface addresses (they change with the network)."""
        self._local_ips = {canonical_ip(ip) for ip in ips}

    def __contains__(self, addr: object) -> bool:
        if not isinstance(addr, tuple) or len(addr) != 2:
            return False
        ip = canonical_ip(str(addr[0]))
        port = addr[1]
        if (ip, port) in self._exact:
            return True
        if port not in self._any_ports:
            return False
        if ip in self._local_ips:
            return True
        try:
            parsed = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return parsed.is_loopback or parsed.is_unspecified
