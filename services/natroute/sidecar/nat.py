"""NAT classification: what two beacons see of one socket (issue: NAT classification).

Endpoint discovery (spec §5.8) sends a Discover from the node's traffic socket
to up to two beacons. The same public endpoint from both means the NAT maps
endpoint-independently (cone: hole punching works); different endpoints mean
endpoint-dependent (symmetric) mapping, so the node registers ``relay_only``;
an observed endpoint equal to our own address means there is no NAT at all.
Blocking: runs before the receive loop owns the socket, in a worker thread.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field

from natroute.routing.discover import discover_endpoint
from natroute.routing.errors import RoutingError
from natroute.routing.resolve import resolve_udp_addr
from natroute.routing.types import Addr

from .model import NatType

__all__ = ["NatReport", "classify_nat", "detect_nat"]

_log = logging.getLogger(__name__)


def classify_nat(local: Addr, observed: list[Addr]) -> NatType:
    """NAT type from the endpoints the beacons observed for one socket.

    Args:
        local: the socket's own address on the interface towards the beacons.
        observed: what each beacon that answered saw (0, 1 or 2 entries).
    """
    if not observed:
        return NatType.UNKNOWN
    if all(o == local for o in observed):
        return NatType.NONE
    if len(observed) < 2:
        return NatType.UNKNOWN
    if len(set(observed)) == 1:
        return NatType.ENDPOINT_INDEPENDENT
    return NatType.ENDPOINT_DEPENDENT


@dataclass(frozen=True)
class NatReport:
    """What discovery found: per-beacon observations, our address, the NAT type."""

    nat_type: NatType = NatType.UNKNOWN
    observations: dict[str, Addr] = field(default_factory=dict)
    local_addr: Addr | None = None

    @property
    def public_endpoint(self) -> Addr | None:
        """The endpoint the first answering beacon saw."""
        return next(iter(self.observations.values()), None)


def _local_addr_towards(target: Addr, port: int) -> Addr:
    """Our interface address on the route to ``target`` (no packet is sent)."""
    family = socket.AF_INET6 if ":" in target[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect(target)
        return str(probe.getsockname()[0]), port


def detect_nat(
    sock: socket.socket, beacons: Iterable[str], timeout: float, limit: int = 2
) -> NatReport:
    """Discover our endpoint through up to ``limit`` beacons, in order; classify.

    Beacons that do not answer are skipped (logged); with none answering the
    NAT type is ``unknown``.
    """
    observations: dict[str, Addr] = {}
    target: Addr | None = None
    for beacon in beacons:
        if len(observations) >= limit:
            break
        try:
            observations[beacon] = discover_endpoint(beacon, 0, sock, timeout)
            target = target or resolve_udp_addr(beacon, sock.family)
        except RoutingError as exc:
            _log.warning("discover_failed", extra={"beacon": beacon, "error": str(exc)})
    if target is None:
        return NatReport(observations=observations)
    local = _local_addr_towards(target, sock.getsockname()[1])
    return NatReport(classify_nat(local, list(observations.values())), observations, local)
