"""The vocabulary of the sidecar's peer engine: NAT types, drop reasons, config, answers.

Kept apart from :mod:`.engine` so the shells, the status views and the tests
can name these without the logic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from .candidates import Candidate

__all__ = ["DropReason", "NatType", "NodeConfig", "PeerInfo", "PredictConfig", "Transport"]


class NatType(Enum):
    """How the NAT in front of the node maps, from two beacons' observations."""

    UNKNOWN = "unknown"
    NONE = "none"
    ENDPOINT_INDEPENDENT = "endpoint_independent"
    ENDPOINT_DEPENDENT = "endpoint_dependent"


class Transport(Enum):
    """How the node reaches its beacon."""

    UDP = "udp"
    STREAM = "stream"  # a WebSocket to the beacon: UDP is blocked


class DropReason(Enum):
    """Why an inbound or outbound datagram was dropped (a bounded label set)."""

    EMPTY = "empty"
    SHORT = "short"
    UNKNOWN_MAGIC = "unknown_magic"
    MALFORMED = "malformed"
    NOT_FROM_BEACON = "not_from_beacon"
    UNEXPECTED_BEACON_MSG = "unexpected_beacon_msg"
    UNSOLICITED_REPLY = "unsolicited_reply"
    AUTH_FAILED = "auth_failed"
    UNKNOWN_SENDER = "unknown_sender"
    RELAY_SRC_MISMATCH = "relay_src_mismatch"
    PENDING_FULL = "pending_full"
    PENDING_EXPIRED = "pending_expired"
    LOOKUP_REFUSED = "lookup_refused"
    PEER_TABLE_FULL = "peer_table_full"
    UNRESOLVED = "unresolved"
    NO_ADDRESS = "no_address"
    NO_BEACON = "no_beacon"
    SEND_ERROR = "send_error"
    SELF_ADDRESSED = "self_addressed"
    DIAL_BUDGET = "dial_budget"
    BAD_INNER = "bad_inner"
    BAD_CANDIDATE = "bad_candidate"
    WRONG_SOCKET = "wrong_socket"  # on a spray socket: not a frame of the peer it was opened for
    SPRAY_BUDGET = "spray_budget"  # a port-prediction probe over the spray budget


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Timers (seconds) and caps of the peer engine; services set them from settings."""

    max_peers: int = 4096
    pending_per_peer: int = 64
    max_pending_senders: int = 256
    pending_inbound_per_sender: int = 8
    hold_timeout: float = 10.0
    peer_refresh_interval: float = 60.0
    peer_idle_timeout: float = 600.0
    keepalive_interval: float = 15.0
    check_window: float = 5.0
    check_interval: float = 0.5
    nominate_window: float = 1.0
    probe_initial_interval: float = 5.0
    probe_max_interval: float = 120.0
    reevaluate_interval: float = 60.0
    one_way_rounds: int = 3
    offline_after: float = 45.0
    better_path_ratio: float = 0.7
    allow_loopback: bool = False
    force_relay: bool = False


@dataclass(frozen=True, slots=True)
class PredictConfig:
    """Port prediction for endpoint-dependent ↔ port-restricted pairs; off unless ``enabled``.

    Every figure is a bound (docs/protocol.md, "Port prediction"): the hard
    side opens at most ``sockets`` spray sockets, one spray at a time, and
    keeps at most ``max_kept`` of them for paths; the easy side probes at
    most ``probes`` ports per spray, ``rate`` a second after a first
    ``burst``, at most ``max_probing`` sprays at once; every spray datagram
    draws on one node-wide byte budget (``budget_bytes`` burst,
    ``budget_rate`` bytes a second), apart from the dialling budget; a spray
    lasts ``timeout`` seconds; one peer is sprayed again no sooner than
    ``retry_interval`` seconds later, doubling to ``retry_max_interval``.
    """

    enabled: bool = False
    sockets: int = 256
    probes: int = 1024
    rate: float = 512.0
    burst: int = 128
    timeout: float = 5.0
    after: float = 2.0  # seconds of unanswered checks before the hard side offers
    retry_interval: float = 30.0
    retry_max_interval: float = 1800.0
    budget_bytes: float = 131072.0
    budget_rate: float = 2048.0
    max_kept: int = 32
    max_probing: int = 2
    port_min: int = 1024
    port_max: int = 65535


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """A registry resolve answer, as the engine needs it."""

    node_id: int
    x25519_key: bytes
    relay_only: bool = False
    candidates: tuple[Candidate, ...] = field(default=())
    name: str = ""
    transport: Transport = Transport.UDP
