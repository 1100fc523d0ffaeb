"""Where the peer socket sits: our own address on the route towards a beacon.

The NAT type itself is decided from the beacons' observations
(:func:`~.observer.classify_nat`); an observation equal to this address
means there is no NAT at all.
"""

from __future__ import annotations

import socket

from natroute.routing.types import Addr

__all__ = ["local_addr_towards"]


def local_addr_towards(target: Addr, port: int) -> Addr:
    """Our interface address on the route to ``target``, with ``port`` (no packet is sent)."""
    family = socket.AF_INET6 if ":" in target[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect(target)
        return str(probe.getsockname()[0]), port
