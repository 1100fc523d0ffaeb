"""Constants of the routing layer (docs/protocol.md, "Timers and caps"). Durations are seconds."""

from __future__ import annotations

from typing import Final

__all__ = [
    "BEACON_CACHE_FILENAME",
    "BEACON_CACHE_MAX_AGE",
    "BEACON_REFRESH_INTERVAL",
    "BEACON_REFRESH_JITTER",
    "BLACKHOLE_MISSES_REQUIRED",
    "DIRECT_BLACKHOLE_THRESHOLD",
    "DIRECT_CLEARS_REQUIRED",
    "MAX_PEER_STATE",
    "MAX_RELAY_PEERS",
    "PUNCH_PAYLOAD",
    "PUNCH_REPEAT",
    "RTT_PROBE_TIMEOUT",
    "SEND_ERR_THRESHOLD",
]

#: On-disk fallback beacon list, kept next to the identity file.
BEACON_CACHE_FILENAME: Final = "beacons.json"
#: How often the caller re-fetches ``beacon_list`` from the registry.
BEACON_REFRESH_INTERVAL: Final = 60.0
#: Upper bound (exclusive) of the random delay before the first refresh tick.
BEACON_REFRESH_JITTER: Final = 10.0
#: Consecutive "direct path silent" observations needed to flip to relay.
BLACKHOLE_MISSES_REQUIRED: Final = 3
#: Silence (strictly longer than this) on the direct path counts as one miss.
DIRECT_BLACKHOLE_THRESHOLD: Final = 8.0
#: Direct receipts needed to auto-clear an unpinned relay flag.
DIRECT_CLEARS_REQUIRED: Final = 3
#: Cap on the number of keys in the relay-peer map.
MAX_RELAY_PEERS: Final = 4096
#: ICMP-unreachable send errors needed to flip a peer to relay.
SEND_ERR_THRESHOLD: Final = 3

#: Cap on the node IDs tracked by each of the other per-peer maps (docs/decisions.md D17).
MAX_PEER_STATE: Final = 65536
#: A cache older than this is stale (a later upstream's ``BeaconCacheMaxAge``; D23).
BEACON_CACHE_MAX_AGE: Final = 3600.0
#: Punch datagrams sent per punch command, and their body.
PUNCH_REPEAT: Final = 3
PUNCH_PAYLOAD: Final = b"PILP"
#: Timeout the caller uses when probing every beacon's RTT in parallel.
RTT_PROBE_TIMEOUT: Final = 2.0
