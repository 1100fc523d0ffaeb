"""Host candidates: this machine's interface addresses with the peer socket's port.

The one place the sidecar asks the operating system which addresses it has
(through psutil). Loopback, link-local and other addresses no peer could use
are left out, unless the peer socket itself is bound to one (a world on one
host, as in the loopback tests). A socket bound to one address offers only
that address.
"""

from __future__ import annotations

import ipaddress
import socket

import psutil

from natroute.routing.addr import canonical_ip
from natroute.routing.types import Addr

from .candidates import MAX_LOCAL_CANDIDATES, Candidate, CandidateKind, address_problem

__all__ = ["host_candidates", "local_ips"]


def local_ips() -> list[str]:
    """Every address of every interface (IPv4 and IPv6, zones dropped)."""
    out: list[str] = []
    for addrs in psutil.net_if_addrs().values():
        for entry in addrs:
            if entry.family in (socket.AF_INET, socket.AF_INET6):
                out.append(canonical_ip(entry.address))
    return out


def host_candidates(bound: Addr, ips: list[str] | None = None) -> list[Candidate]:
    """Host candidates of a peer socket bound to ``bound``.

    Args:
        bound: the socket's bound address (``0.0.0.0``/``::`` for every interface).
        ips: the interface addresses (default: :func:`local_ips`).

    Returns:
        At most :data:`~.candidates.MAX_LOCAL_CANDIDATES` candidates, IPv4 first.
    """
    host, port = canonical_ip(bound[0]), bound[1]
    if host not in ("0.0.0.0", "::"):
        return [Candidate((host, port), CandidateKind.HOST)]
    family_v4_only = host == "0.0.0.0"
    chosen: list[Candidate] = []
    for ip in sorted(set(ips if ips is not None else local_ips()), key=_order):
        if family_v4_only and ":" in ip:
            continue
        if address_problem((ip, port)) is not None:
            continue
        chosen.append(Candidate((ip, port), CandidateKind.HOST))
    return chosen[:MAX_LOCAL_CANDIDATES]


def _order(ip: str) -> tuple[int, int]:
    parsed = ipaddress.ip_address(ip)
    return parsed.version, int(parsed)
