"""The vocabulary of the sidecar's peer logic: NAT types, drop reasons, config, I/O.

Kept apart from :mod:`.node` so the shells, the status views and the tests
can name these without the logic (``node`` re-exports them).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from natroute.routing.types import Addr

__all__ = ["DropReason", "NatType", "NodeConfig", "NodeIO", "PeerInfo"]


class NatType(Enum):
    """What kind of NAT the node sits behind, from two beacons' observations."""

    UNKNOWN = "unknown"
    NONE = "none"
    ENDPOINT_INDEPENDENT = "endpoint_independent"
    ENDPOINT_DEPENDENT = "endpoint_dependent"


class DropReason(Enum):
    """Why an inbound or outbound datagram was dropped (a bounded label set)."""

    EMPTY = "empty"
    SHORT = "short"
    UNKNOWN_MAGIC = "unknown_magic"
    MALFORMED = "malformed"
    NOT_FROM_BEACON = "not_from_beacon"
    UNEXPECTED_BEACON_MSG = "unexpected_beacon_msg"
    AUTH_FAILED = "auth_failed"
    UNKNOWN_SENDER = "unknown_sender"
    RELAY_SRC_MISMATCH = "relay_src_mismatch"
    RELAY_CAP = "relay_cap"
    PENDING_FULL = "pending_full"
    PEER_TABLE_FULL = "peer_table_full"
    UNRESOLVED = "unresolved"
    NO_ADDRESS = "no_address"
    SEND_ERROR = "send_error"
    BAD_INNER = "bad_inner"


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Timers (seconds) and caps of the peer logic; services set them from settings."""

    max_peers: int = 4096
    pending_per_peer: int = 64
    max_pending_senders: int = 256
    pending_inbound_per_sender: int = 8
    resolve_retry_interval: float = 3.0
    peer_refresh_interval: float = 60.0
    peer_idle_timeout: float = 600.0
    keepalive_interval: float = 15.0
    dial_timeout: float = 5.0
    dial_probe_interval: float = 0.5
    probe_initial_interval: float = 5.0
    probe_max_interval: float = 120.0


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """A registry resolve answer (spec §4.3)."""

    node_id: int
    endpoint: Addr | None
    relay_only: bool
    x25519_key: bytes


class NodeIO(Protocol):
    """What the peer logic asks of its shell."""

    def deliver(self, src: int, payload: bytes) -> None:
        """Hand an application payload from ``src`` to the local application."""

    def resolve(self, node_id: int) -> None:
        """Resolve ``node_id``; answer with ``on_resolved`` or ``on_resolve_failed``."""

    def endpoint_observed(self, addr: Addr) -> None:
        """The beacon reported our public endpoint (a keepalive's reply)."""
