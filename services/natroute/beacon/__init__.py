"""natroute.beacon: the reference beacon: rendezvous, hole punching, relay.

:mod:`.core` decides (sans-I/O); :mod:`.udp` moves datagrams; :mod:`.service`
runs the UDP endpoint, the admin HTTP app and the periodic tasks in one loop;
:mod:`.main` is the ``natroute-beacon`` console script. Names are loaded on
first use (PEP 562) so that the console script can answer UDP before the
heavier modules are imported (beacon README "Start-up").
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_HOME = {
    "BeaconConfig": "config",
    "BeaconCore": "core",
    "BeaconSnapshot": "stats",
    "DiscoverAuthError": "auth",
    "DropReason": "stats",
    "Outgoing": "core",
    "RateLimit": "config",
    "SignedDiscover": "auth",
    "sign_discover": "auth",
    "verify_discover": "auth",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
