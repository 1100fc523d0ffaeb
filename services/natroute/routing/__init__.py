"""natroute.routing: the seed's L4 "peer discovery & routing" API in Python.

Sans-I/O: nothing here opens sockets, reads clocks or starts tasks, except the
two blocking helpers of :mod:`natroute.routing.discover` (endpoint discovery
and the RTT probe), which take the socket or create a throw-away one, and the
seed's blocking ``refresh_tick`` around the pure :class:`RefreshTick`.
"""

from __future__ import annotations

from .cache import (
    BeaconCacheEntry,
    beacon_cache_path,
    load_beacon_cache,
    load_beacon_cache_entry,
    save_beacon_cache,
)
from .config import ManagerConfig
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
from .discover import discover_endpoint, parse_discover_reply, probe_beacon_rtt
from .errors import (
    CacheError,
    DiscoveryError,
    NoAddressError,
    RegistryError,
    ResolveError,
    RoutingError,
    SendError,
    SocketNotSetError,
    UsageError,
    WireError,
)
from .manager import Manager, PeerRouting, is_icmp_unreachable
from .refresh import (
    BeaconSource,
    ListSource,
    PickReason,
    RefreshAction,
    RefreshOutcome,
    RefreshStep,
    RefreshTick,
    RttProber,
    refresh_tick,
)
from .resolve import lookup_target, pick_resolved, resolve_udp_addr
from .selection import (
    BeaconSelectionState,
    RefreshDecision,
    clean_beacon_list,
    compute_refresh_decision,
    fetch_beacon_list,
    filter_unreachable,
    first_beacon,
    fnv1a32,
    initial_jitter,
    is_unreachable_beacon_host,
    merge_beacon_lists,
    parse_beacon_list,
    pick_beacon,
    pick_beacon_with_rtt,
)
from .types import (
    Addr,
    BeaconLister,
    BlackholeCheck,
    CounterTarget,
    LocalNodeIDFn,
    RelayAdmission,
    SendErrorCount,
    SendOutcome,
    SocketSender,
)

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
    "BeaconCacheEntry",
    "BeaconLister",
    "BeaconSelectionState",
    "BeaconSource",
    "BlackholeCheck",
    "CacheError",
    "CounterTarget",
    "DiscoveryError",
    "ListSource",
    "LocalNodeIDFn",
    "Manager",
    "ManagerConfig",
    "NoAddressError",
    "PeerRouting",
    "PickReason",
    "RefreshAction",
    "RefreshDecision",
    "RefreshOutcome",
    "RefreshStep",
    "RefreshTick",
    "RegistryError",
    "RelayAdmission",
    "ResolveError",
    "RoutingError",
    "RttProber",
    "SendError",
    "SendErrorCount",
    "SendOutcome",
    "SocketNotSetError",
    "SocketSender",
    "UsageError",
    "WireError",
    "beacon_cache_path",
    "clean_beacon_list",
    "compute_refresh_decision",
    "discover_endpoint",
    "fetch_beacon_list",
    "filter_unreachable",
    "first_beacon",
    "fnv1a32",
    "initial_jitter",
    "is_icmp_unreachable",
    "is_unreachable_beacon_host",
    "load_beacon_cache",
    "load_beacon_cache_entry",
    "lookup_target",
    "merge_beacon_lists",
    "parse_beacon_list",
    "parse_discover_reply",
    "pick_beacon",
    "pick_beacon_with_rtt",
    "pick_resolved",
    "probe_beacon_rtt",
    "refresh_tick",
    "resolve_udp_addr",
    "save_beacon_cache",
]
