"""natroute.beacon: the reference beacon (spec §3): rendezvous, hole punching, relay.

:mod:`.core` decides (sans-I/O); :mod:`.udp` moves datagrams; :mod:`.service`
runs the UDP endpoint, the admin HTTP app and the periodic tasks in one loop;
:mod:`.main` is the ``natroute-beacon`` console script.
"""

from __future__ import annotations

from .auth import DiscoverAuthError, SignedDiscover, sign_discover, verify_discover
from .config import BeaconConfig, RateLimit
from .core import BeaconCore, Outgoing
from .stats import BeaconSnapshot, DropReason

__all__ = [
    "BeaconConfig",
    "BeaconCore",
    "BeaconSnapshot",
    "DiscoverAuthError",
    "DropReason",
    "Outgoing",
    "RateLimit",
    "SignedDiscover",
    "sign_discover",
    "verify_discover",
]
