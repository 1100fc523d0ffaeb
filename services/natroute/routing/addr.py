"""Small helpers for UDP addresses and node IDs.

Address equality follows Go's ``net.IP.Equal``: an IPv4 address equals its
IPv4-mapped IPv6 form (``::ffff:a.b.c.d``); zones are ignored (docs/protocol.md,
"Threads and time").
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from .errors import UsageError
from .types import Addr

__all__ = [
    "MAX_NODE_ID",
    "addr_equal",
    "canonical_ip",
    "check_node_id",
    "format_addr",
    "parse_endpoint",
    "split_host_port",
]

MAX_NODE_ID = 0xFFFFFFFF


def check_node_id(node_id: int) -> int:
    """Return ``node_id`` if it is a valid unsigned 32-bit node ID.

    Raises:
        UsageError: when it is not an int in ``[0, 2**32-1]``.
    """
    if type(node_id) is not int or not 0 <= node_id <= MAX_NODE_ID:
        raise UsageError(f"node ID out of range: {node_id!r}")
    return node_id


@lru_cache(maxsize=4096)
def canonical_ip(host: str) -> str:
    """Canonical text of an IP literal: mapped IPv4 unwrapped, zone dropped.

    Host names (and anything else that is not an IP literal) come back as
    they were, lower-cased, so they still compare equal to themselves.
    """
    text = host.split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return host.lower()
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def addr_equal(a: Addr | None, b: Addr | None) -> bool:
    """True when both are set and name the same IP (v4 == mapped v6) and port."""
    if a is None or b is None:
        return False
    if a[1] != b[1]:
        return False
    return a[0] == b[0] or canonical_ip(a[0]) == canonical_ip(b[0])


def split_host_port(hostport: str) -> Addr:
    """Split ``host:port`` / ``[v6]:port`` (Go ``net.SplitHostPort`` rules).

    Raises:
        ValueError: when there is no port, the port is not a number in
            ``[0, 65535]`` or an unbracketed host has more than one colon.
    """
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0 or not hostport[end + 1 : end + 2] == ":":
            raise ValueError(f"missing port in address {hostport!r}")
        host, port_text = hostport[1:end], hostport[end + 2 :]
    else:
        host, sep, port_text = hostport.rpartition(":")
        if not sep:
            raise ValueError(f"missing port in address {hostport!r}")
        if ":" in host:
            raise ValueError(f"too many colons in address {hostport!r}")
    if not port_text.isdigit() or not port_text.isascii():
        raise ValueError(f"invalid port in address {hostport!r}")
    port = int(port_text)
    if port > 0xFFFF:
        raise ValueError(f"invalid port in address {hostport!r}")
    return host, port


def parse_endpoint(text: str | None) -> Addr | None:
    """``host:port`` text as an address, IP canonical; None when empty or unusable.

    Unusable: not ``host:port``, no host, or port 0 (a configured endpoint
    that cannot be sent to is treated as no endpoint at all).
    """
    if not text:
        return None
    try:
        host, port = split_host_port(text)
    except ValueError:
        return None
    return (canonical_ip(host), port) if host and port else None


def format_addr(addr: Addr) -> str:
    """``host:port``, with IPv6 literals bracketed."""
    host, port = addr
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"
