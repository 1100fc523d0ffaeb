"""Frozen configuration of the beacon core (docs/protocol.md, "Timers and caps").

The core never reads settings, env or clocks: the shell builds one
:class:`BeaconConfig` from its pydantic ``Settings`` and passes it in.
Durations are float seconds; rates are tokens per second.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from natroute._service.ratelimit import RateLimit

__all__ = [
    "DEFAULT_GOSSIP_INTERVAL",
    "DEFAULT_NODE_CAP",
    "DEFAULT_NODE_QUOTA_HOST",
    "DEFAULT_NODE_QUOTA_NET",
    "DEFAULT_NODE_TTL",
    "DEFAULT_REGISTER_INTERVAL",
    "DEFAULT_SWEEP_INTERVAL",
    "MAX_RELAY_PAYLOAD",
    "MAX_SYNC_IDS_PER_DATAGRAM",
    "BeaconConfig",
    "RateLimit",
]

#: Node entries idle this long expire.
DEFAULT_NODE_TTL: Final = 600.0
#: Period of the expiry sweep.
DEFAULT_SWEEP_INTERVAL: Final = 60.0
#: Node table cap (README, "Node table").
DEFAULT_NODE_CAP: Final = 500_000
#: Node entries per IPv4 address or IPv6 /64 (beacon README "Node table").
DEFAULT_NODE_QUOTA_HOST: Final = 256
#: Node entries per IPv4 /24 or IPv6 /48.
DEFAULT_NODE_QUOTA_NET: Final = 2048
#: Period of Sync gossip to each peer beacon.
DEFAULT_GOSSIP_INTERVAL: Final = 10.0
#: Period of registration with the registry (it lists a beacon for 60 s).
DEFAULT_REGISTER_INTERVAL: Final = 30.0
#: Largest relay payload accepted.
MAX_RELAY_PAYLOAD: Final = 65_535
#: Node IDs per Sync datagram: 7 + 4*16 000 bytes stays under the 65 507-byte
#: IPv4 UDP payload limit, so one gossip datagram is never refused by the kernel.
MAX_SYNC_IDS_PER_DATAGRAM: Final = 16_000


@dataclass(frozen=True, slots=True)
class BeaconConfig:
    """Everything the core decides with, besides the datagrams and ``now``.

    Attributes:
        beacon_id: this beacon's ID (u32, non-zero), sent in Sync.
        strict: enforce sender/ownership checks (docs/decisions.md D15); off = upstream.
        node_ttl: idle time after which a node entry expires.
        node_cap: most node entries held; at the cap a new signed node evicts
            the least recently seen unsigned entry, any other new node is dropped.
        node_quota_host: most node entries per source IPv4 address or IPv6 /64
            (0: no quota).
        node_quota_net: most node entries per source IPv4 /24 or IPv6 /48
            (0: no quota).
        require_signature: strict mode only: an unsigned Discover or
            PunchRequest never records a new node (it is still answered).
        gossip_ttl: a gossip entry not refreshed for this long expires (D27).
        gossip_cap: most gossip entries held.
        handoff_after: a local node entry not refreshed for this long yields to a
            peer beacon that announces the node (it moved there; relays follow it
            instead of going to a mapping the node no longer listens on).
        auth_max_skew: accepted distance between a signed discover's time and
            the beacon's wall clock.
        discover_limit: per source IP (IPv6: per /64) bucket for Discover.
        punch_limit: per source IP (IPv6: per /64) bucket for PunchRequest.
        relay_packet_limit: per source (IP, port) bucket, one token a relay.
        relay_byte_limit: per source (IP, port) bucket, one token a payload byte.
        limiter_cap: most sources tracked by each rate limiter.
        max_relay_payload: payloads above this are dropped.
        sync_ids_per_datagram: node IDs carried by one Sync datagram.
    """

    beacon_id: int
    strict: bool = True
    node_ttl: float = DEFAULT_NODE_TTL
    node_cap: int = DEFAULT_NODE_CAP
    node_quota_host: int = DEFAULT_NODE_QUOTA_HOST
    node_quota_net: int = DEFAULT_NODE_QUOTA_NET
    require_signature: bool = False
    gossip_ttl: float = 3 * DEFAULT_GOSSIP_INTERVAL
    gossip_cap: int = DEFAULT_NODE_CAP
    handoff_after: float = 60.0
    auth_max_skew: float = 120.0
    discover_limit: RateLimit = RateLimit(rate=10.0, burst=40.0)
    punch_limit: RateLimit = RateLimit(rate=2.0, burst=10.0)
    # Per-source relay budgets (beacon README "Relay budgets"): about a tenth of
    # what a small beacon relays (100-200k frames/s measured on 2 cores), and
    # about what one sidecar can push relayed; 12.5 MB/s is 100 Mbit/s.
    relay_packet_limit: RateLimit = RateLimit(rate=10_000.0, burst=20_000.0)
    relay_byte_limit: RateLimit = RateLimit(rate=12_500_000.0, burst=25_000_000.0)
    limiter_cap: int = 65_536
    max_relay_payload: int = MAX_RELAY_PAYLOAD
    sync_ids_per_datagram: int = MAX_SYNC_IDS_PER_DATAGRAM
    # A node new to this beacon is announced to the peer beacons at once
    # (beacon README "Gossip"), no sooner than this many seconds after the
    # previous round for each Sync datagram a round takes; 0: only the timer.
    early_gossip_spacing: float = 0.25

    def __post_init__(self) -> None:
        if not 0 < self.beacon_id <= 0xFFFFFFFF:
            raise ValueError(f"beacon_id must be in 1..2**32-1, not {self.beacon_id}")
        if self.node_ttl <= 0 or self.gossip_ttl <= 0 or self.handoff_after <= 0:
            raise ValueError("node_ttl, gossip_ttl and handoff_after must be positive")
        if self.node_cap < 1 or self.gossip_cap < 1 or self.limiter_cap < 1:
            raise ValueError("caps must be at least 1")
        if self.node_quota_host < 0 or self.node_quota_net < 0:
            raise ValueError("node quotas must be 0 (off) or positive")
        if self.early_gossip_spacing < 0:
            raise ValueError("early_gossip_spacing must be 0 (off) or positive")
        if not 1 <= self.sync_ids_per_datagram <= MAX_SYNC_IDS_PER_DATAGRAM:
            raise ValueError("sync_ids_per_datagram out of range")
        if self.relay_byte_limit.enabled and self.relay_byte_limit.burst < self.max_relay_payload:
            # Otherwise the largest frames could never be relayed at all.
            raise ValueError("relay byte burst must be at least max_relay_payload")
