"""Counters kept by the beacon core and the immutable snapshot the admin API reads.

Drop reasons are a closed Enum so the metrics label set stays bounded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Final

__all__ = ["BeaconSnapshot", "Counters", "DropReason"]


class DropReason(Enum):
    """Why a datagram (or the recording part of it) was not acted upon."""

    MALFORMED = "malformed"
    NOT_BEACON_MESSAGE = "not_beacon_message"
    UNKNOWN_TYPE = "unknown_type"
    UNEXPECTED_TYPE = "unexpected_type"
    RATE_LIMITED_DISCOVER = "rate_limited_discover"
    RATE_LIMITED_PUNCH = "rate_limited_punch"
    RATE_LIMITED_RELAY = "rate_limited_relay"
    TABLE_FULL = "table_full"
    QUOTA = "quota_exceeded"
    UNSIGNED_REFUSED = "unsigned_refused"
    AUTH_INVALID = "auth_invalid"
    TAKEOVER_REJECTED = "takeover_rejected"
    PUNCH_REQUESTER_UNKNOWN = "punch_requester_unknown"
    PUNCH_TARGET_UNKNOWN = "punch_target_unknown"
    PUNCH_TARGET_STREAM = "punch_target_stream"
    RELAY_TOO_LARGE = "relay_too_large"
    RELAY_SENDER_MISMATCH = "relay_sender_mismatch"
    RELAY_UNKNOWN_DST = "relay_unknown_dst"
    RELAY_HOP_LIMIT = "relay_hop_limit"
    SYNC_UNKNOWN_PEER = "sync_unknown_peer"
    FORWARD_UNKNOWN_PEER = "forward_unknown_peer"
    SYNC_GOSSIP_FULL = "sync_gossip_full"
    SEND_FAILED = "send_failed"


_REASONS: Final = tuple(DropReason)


@dataclass(slots=True)
class Counters:
    """Mutable counters owned by the core (plain ints: the hot path bumps them)."""

    received: int = 0
    discovers: int = 0
    discover_replies: int = 0
    registrations: int = 0
    authenticated: int = 0
    punches: int = 0
    punches_forwarded: int = 0
    relayed_packets: int = 0
    relayed_bytes: int = 0
    forwarded_packets: int = 0
    forwarded_bytes: int = 0
    syncs_received: int = 0
    syncs_sent: int = 0
    early_syncs: int = 0
    expired_nodes: int = 0
    drops: dict[DropReason, int] = field(default_factory=lambda: dict.fromkeys(_REASONS, 0))


@dataclass(frozen=True, slots=True)
class BeaconSnapshot:
    """A read-only copy of core state for ``/v1/status`` and ``/metrics``.

    Attributes:
        beacon_id: this beacon's ID.
        strict: whether strict mode is on.
        nodes: node entries held (expired ones not yet swept included).
        signed_nodes: the part of ``nodes`` with a bound key.
        gossip_entries: node IDs known from peer beacons.
        peers: peer beacon addresses (``host:port``), sorted.
        received .. evicted_nodes: totals since start (see :class:`Counters`;
            ``evicted_nodes`` counts live unsigned entries evicted for signed ones).
        drops: drop counts by reason value, every reason present.
        stream_url: the stream relay URL advertised, None when the relay is off.
        stream_sessions: stream relay sessions open.
        stream: stream relay event counters (see ``StreamHub.snapshot``).
    """

    beacon_id: int
    strict: bool
    nodes: int
    signed_nodes: int
    gossip_entries: int
    peers: tuple[str, ...]
    received: int
    discovers: int
    discover_replies: int
    registrations: int
    authenticated: int
    punches: int
    punches_forwarded: int
    relayed_packets: int
    relayed_bytes: int
    forwarded_packets: int
    forwarded_bytes: int
    syncs_received: int
    syncs_sent: int
    early_syncs: int
    expired_nodes: int
    evicted_nodes: int
    drops: MappingProxyType[str, int]
    stream_url: str | None = None
    stream_sessions: int = 0
    stream: MappingProxyType[str, int] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def dropped_total(self) -> int:
        """Sum of every drop reason."""
        return sum(self.drops.values())
