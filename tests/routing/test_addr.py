"""Address and node-ID helpers, and the default resolver (docs/protocol.md, "Threads and time")."""

from __future__ import annotations

import socket

import pytest

from natroute.routing import (
    Addr,
    ResolveError,
    UsageError,
    lookup_target,
    pick_resolved,
    resolve_udp_addr,
)
from natroute.routing.addr import (
    MAX_NODE_ID,
    addr_equal,
    canonical_ip,
    check_node_id,
    format_addr,
    parse_endpoint,
    split_host_port,
)


@pytest.mark.parametrize("node", [0, 1, MAX_NODE_ID])
def test_check_node_id_accepts(node: int) -> None:
    assert check_node_id(node) == node


@pytest.mark.parametrize("node", [-1, MAX_NODE_ID + 1, True, 1.5, None])
def test_check_node_id_rejects(node: object) -> None:
    with pytest.raises(UsageError, match="node ID out of range"):
        check_node_id(node)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("host", "canonical"),
    [
        ("198.51.100.1", "198.51.100.1"),
        ("::ffff:198.51.100.1", "198.51.100.1"),
        ("2001:DB8::1", "2001:db8::1"),
        ("fe80::1%eth0", "fe80::1"),
        ("Beacon.Example", "beacon.example"),
    ],
)
def test_canonical_ip(host: str, canonical: str) -> None:
    assert canonical_ip(host) == canonical


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        (("198.51.100.1", 1), ("::ffff:198.51.100.1", 1), True),
        (("198.51.100.1", 1), ("198.51.100.1", 2), False),
        (("fe80::1%eth0", 1), ("fe80::1", 1), True),
        (("beacon.example", 1), ("BEACON.example", 1), True),
        (("198.51.100.1", 1), None, False),
        (None, None, False),
    ],
)
def test_addr_equal(a: Addr | None, b: Addr | None, equal: bool) -> None:
    assert addr_equal(a, b) is equal
    assert addr_equal(b, a) is equal


@pytest.mark.parametrize(
    ("text", "addr"),
    [
        ("h:1", ("h", 1)),
        ("[2001:db8::1]:9001", ("2001:db8::1", 9001)),
        (":9001", ("", 9001)),
        ("h:65535", ("h", 65535)),
    ],
)
def test_split_host_port(text: str, addr: Addr) -> None:
    assert split_host_port(text) == addr


@pytest.mark.parametrize(
    "text", ["h", "fe80::1", "[::1]", "[::1", "h:", "h:x", "h:65536", "h:\u0661"], ids=repr
)
def test_split_host_port_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="address"):
        split_host_port(text)


@pytest.mark.parametrize(
    ("addr", "text"),
    [(("198.51.100.1", 1), "198.51.100.1:1"), (("2001:db8::1", 2), "[2001:db8::1]:2")],
)
def test_format_addr(addr: Addr, text: str) -> None:
    assert format_addr(addr) == text
    assert split_host_port(text) == addr


@pytest.mark.parametrize(
    ("text", "addr"),
    [
        ("198.51.100.1:4000", ("198.51.100.1", 4000)),
        ("[::ffff:198.51.100.1]:4000", ("198.51.100.1", 4000)),  # canonical
        ("[2001:DB8::1]:9", ("2001:db8::1", 9)),
        ("Node.Example:1", ("node.example", 1)),
        (None, None),
        ("", None),
        ("no-port", None),
        ("198.51.100.1:0", None),
        (":4000", None),
    ],
)
def test_parse_endpoint(text: str | None, addr: Addr | None) -> None:
    assert parse_endpoint(text) == addr


@pytest.mark.parametrize(
    ("text", "addr"),
    [
        ("127.0.0.1:9001", ("127.0.0.1", 9001)),
        ("[::1]:9001", ("::1", 9001)),
        ("[::ffff:127.0.0.1]:9", ("127.0.0.1", 9)),
    ],
)
def test_resolve_literals(text: str, addr: Addr) -> None:
    assert resolve_udp_addr(text) == addr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty address"),
        ("127.0.0.1", "missing port"),
        (":9001", "missing host"),
        ("a" * 64 + ".example:9001", "resolve beacon"),  # IDNA rejects it: no DNS query
    ],
)
def test_resolve_errors(text: str, message: str) -> None:
    with pytest.raises(ResolveError, match=message):
        resolve_udp_addr(text)


def test_resolve_family_mismatch() -> None:
    with pytest.raises(ResolveError):
        resolve_udp_addr("[::1]:9001", socket.AF_INET)


def test_lookup_target_is_the_resolver_s_rule_without_dns() -> None:
    assert lookup_target("beacon.example:9001") == ("beacon.example", 9001)
    assert lookup_target("[2001:db8::1]:9") == ("2001:db8::1", 9)
    with pytest.raises(ResolveError, match="missing host"):
        lookup_target(":9001")


def test_pick_resolved_prefers_ipv4_and_canonicalises() -> None:
    v6 = (socket.AF_INET6, socket.SOCK_DGRAM, 17, "", ("2001:db8::1", 9, 0, 0))
    v4 = (socket.AF_INET, socket.SOCK_DGRAM, 17, "", ("198.51.100.1", 9))
    mapped = (socket.AF_INET6, socket.SOCK_DGRAM, 17, "", ("::ffff:198.51.100.2", 9, 0, 0))
    assert pick_resolved([v6, v4], 9001) == ("198.51.100.1", 9001)
    assert pick_resolved([v6], 9001) == ("2001:db8::1", 9001)
    assert pick_resolved([mapped], 9001) == ("198.51.100.2", 9001)
    with pytest.raises(ResolveError, match="no address"):
        pick_resolved([], 9001)
