"""natroute.routing: the seed's L4 "peer discovery & routing" API in Python.

Sans-I/O: nothing here opens sockets, reads clocks or starts tasks, except the
two blocking helpers of :mod:`natroute.routing.discover` (endpoint discovery
and the RTT probe), which take the socket or create a throw-away one.
"""

from __future__ import annotations

from .constants import (
    BEACON_CACHE_FILENAME,
    BEACON_REFRESH_INTERVAL,
    BEACON_REFRESH_JITTER,
    BLACKHOLE_MISSES_REQUIRED,
    DIRECT_BLACKHOLE_THRESHOLD,
    DIRECT_CLEARS_REQUIRED,
    MAX_RELAY_PEERS,
    SEND_ERR_THRESHOLD,
)
from .errors import (
    CacheError,
    DiscoveryError,
    NoAddressError,
    RegistryError,
    ResolveError,
    RoutingError,
    SocketNotSetError,
    UsageError,
    WireError,
)
from .types import Addr, BeaconLister, CounterTarget, LocalNodeIDFn, SendOutcome, SocketSender

__all__ = [
    "BEACON_CACHE_FILENAME",
    "BEACON_REFRESH_INTERVAL",
    "BEACON_REFRESH_JITTER",
    "BLACKHOLE_MISSES_REQUIRED",
    "DIRECT_BLACKHOLE_THRESHOLD",
    "DIRECT_CLEARS_REQUIRED",
    "MAX_RELAY_PEERS",
    "SEND_ERR_THRESHOLD",
    "Addr",
    "BeaconLister",
    "CacheError",
    "CounterTarget",
    "DiscoveryError",
    "LocalNodeIDFn",
    "NoAddressError",
    "RegistryError",
    "ResolveError",
    "RoutingError",
    "SendOutcome",
    "SocketNotSetError",
    "SocketSender",
    "UsageError",
    "WireError",
]
