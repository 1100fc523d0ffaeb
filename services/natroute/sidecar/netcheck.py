"""``natroute netcheck``: what this host's network does to UDP, without a sidecar.

One UDP socket asks every beacon (up to :data:`MAX_BEACONS`) which endpoint
it sees, through the same :class:`~.observer.Observer` the sidecar uses, so
the verdict follows the same rules (docs/protocol.md, "Public endpoint and
NAT type"): the public endpoint per beacon and its round trip, whether the
mapping is endpoint-independent, whether the NAT hairpins (a datagram to our
own public endpoint comes back), and whether UDP works at all; when it does
not, whether the beacons' stream relay answers over TCP. Whether filtering is
endpoint-independent cannot be told with our beacons (each answers from the
address we sent to), so the report says so.
"""

from __future__ import annotations

import os
import select
import socket
import time
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

from natroute.routing.addr import format_addr
from natroute.routing.discover import parse_discover_reply
from natroute.routing.errors import DiscoveryError, RoutingError
from natroute.routing.resolve import resolve_udp_addr
from natroute.routing.types import Addr
from natroute.routing.wire import Discover, encode_message

from .interfaces import local_ips
from .model import NatType
from .nat import local_addr_towards
from .observer import Observer, classify_nat

__all__ = ["MAX_BEACONS", "BeaconProbe", "NetReport", "netcheck"]

#: Most beacons asked.
MAX_BEACONS: Final = 8
_HAIRPIN_MAGIC: Final = b"NRHP"


@dataclass(frozen=True, slots=True)
class BeaconProbe:
    """One beacon's answer: the endpoint it saw and the round trip (None: no answer)."""

    beacon: str
    addr: str | None
    observed: str | None
    rtt_ms: float | None
    error: str = ""


@dataclass(frozen=True, slots=True)
class NetReport:
    """Everything netcheck found."""

    local: str | None
    udp: bool
    nat_type: str
    mapping: str
    filtering: str
    hairpin: bool | None
    public_endpoints: tuple[str, ...]
    beacons: tuple[BeaconProbe, ...]
    stream: dict[str, bool] = field(default_factory=dict)
    ipv6: bool = False


def _tcp_reachable(url: str, timeout: float) -> bool:
    parts = urlsplit(url)
    if not parts.hostname:
        return False
    port = parts.port or (443 if parts.scheme == "wss" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def _receive(sock: socket.socket, until: float) -> list[tuple[bytes, Addr, float]]:
    """Datagrams that arrive before ``until``, each with its arrival time."""
    got: list[tuple[bytes, Addr, float]] = []
    while True:
        left = until - time.monotonic()
        if left <= 0:
            return got
        ready, _, _ = select.select([sock], [], [], left)
        if not ready:
            return got
        try:
            data, src = sock.recvfrom(2048)
        except OSError:
            continue
        got.append((data, (str(src[0]), int(src[1])), time.monotonic()))


def netcheck(
    beacons: list[str], *, timeout: float = 2.0, stream_urls: dict[str, str] | None = None
) -> NetReport:
    """Probe the network through ``beacons`` (``host:port``); blocking.

    Args:
        beacons: beacons to ask, in order (the first :data:`MAX_BEACONS`).
        timeout: seconds to wait for answers (each phase).
        stream_urls: beacon -> stream relay URL, tried over TCP when UDP fails.
    """
    observer = Observer(reply_window=timeout)
    probes: dict[str, BeaconProbe] = {}
    resolved: dict[str, Addr] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("0.0.0.0", 0))
        port = int(sock.getsockname()[1])
        for beacon in beacons[:MAX_BEACONS]:
            try:
                resolved[beacon] = resolve_udp_addr(beacon, socket.AF_INET)
            except RoutingError as exc:
                probes[beacon] = BeaconProbe(beacon, None, None, None, str(exc))
        if resolved:
            first = next(iter(resolved.values()))
            observer.local = local_addr_towards(first, port)
        observer.start_check(tuple(resolved), time.monotonic())
        discover = encode_message(Discover(0))
        for beacon, addr in resolved.items():
            try:
                sock.sendto(discover, addr)
            except OSError as exc:
                probes[beacon] = BeaconProbe(beacon, format_addr(addr), None, None, str(exc))
                continue
            observer.sent(beacon, addr, time.monotonic())
        for data, src, at in _receive(sock, time.monotonic() + timeout):
            try:
                observer.reply(src, parse_discover_reply(data), at)
            except DiscoveryError:
                continue
        for beacon, addr in resolved.items():
            seen = observer.observations.get(beacon)
            rtt = observer.rtt.get(beacon) if seen is not None else None
            probes.setdefault(
                beacon,
                BeaconProbe(
                    beacon,
                    format_addr(addr),
                    format_addr(seen) if seen else None,
                    None if rtt is None else round(rtt * 1000.0, 3),
                    "" if seen else "no answer",
                ),
            )
        observed = list(observer.observations.values())
        nat_type = classify_nat(observer.local, observed)
        hairpin = _hairpin(sock, observer.endpoint, nat_type, timeout) if observed else None
    udp = bool(observed)
    stream: dict[str, bool] = {}
    if not udp:
        for beacon, url in (stream_urls or {}).items():
            stream[beacon] = _tcp_reachable(url, timeout)
    return NetReport(
        local=format_addr(observer.local) if observer.local else None,
        udp=udp,
        nat_type=nat_type.value,
        mapping=_mapping(nat_type),
        filtering="unknown (every beacon answers from the address it was asked at)",
        hairpin=hairpin,
        public_endpoints=tuple(sorted({format_addr(o) for o in observed})),
        beacons=tuple(probes[b] for b in beacons[:MAX_BEACONS] if b in probes),
        stream=stream,
        ipv6=any(":" in ip and not ip.startswith(("fe80", "::1")) for ip in local_ips()),
    )


def _mapping(nat_type: NatType) -> str:
    return {
        NatType.NONE: "none (no NAT)",
        NatType.ENDPOINT_INDEPENDENT: (
            "endpoint-independent (the same public endpoint for every beacon)"
        ),
        NatType.ENDPOINT_DEPENDENT: "endpoint-dependent (a public endpoint per destination)",
        NatType.UNKNOWN: "unknown (fewer than two beacons answered)",
    }[nat_type]


def _hairpin(
    sock: socket.socket, endpoint: Addr | None, nat_type: NatType, timeout: float
) -> bool | None:
    """Does a datagram to our own public endpoint come back? (None: no NAT to ask.)"""
    if endpoint is None or nat_type is NatType.NONE:
        return None
    token = _HAIRPIN_MAGIC + os.urandom(12)
    try:
        sock.sendto(token, endpoint)
    except OSError:
        return False
    return any(data == token for data, _, _ in _receive(sock, time.monotonic() + timeout / 2))
