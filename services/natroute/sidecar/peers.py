"""The sidecar's per-peer records: path, why it is what it is, and its history.

The routing Manager owns relay flags, pins and the heuristics' counters; a
:class:`Peer` adds what the sidecar needs around them: the peer's address and
cipher, why it is relayed (which decides whether re-probes may bring it back),
traffic counters and a bounded history of path events.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import Enum

from natroute.routing.types import Addr

from .crypto import PeerCipher

__all__ = [
    "HEURISTIC_REASONS",
    "Path",
    "PathEvent",
    "PathReason",
    "Peer",
    "PeerTable",
]


class Path(Enum):
    """How frames to a peer travel."""

    DIRECT = "direct"
    RELAY = "relay"


class PathReason(Enum):
    """Why a peer's path changed (the reason codes shown to operators)."""

    PUNCHED = "punched"
    BLACKHOLE = "blackhole"
    ICMP_UNREACHABLE = "icmp_unreachable"
    DIAL_FAILURE = "dial_failure"
    PEER_RELAYED = "peer_relayed"
    RELAY_ONLY = "relay_only"
    RELAY_ONLY_CLEARED = "relay_only_cleared"
    LOCAL_SYMMETRIC_NAT = "local_symmetric_nat"
    SELF_RELAY_ONLY = "self_relay_only"
    DIRECT_RESTORED = "direct_restored"
    OPERATOR = "operator"


#: Relay reasons that re-probes may undo; the others are authoritative.
HEURISTIC_REASONS = frozenset(
    {
        PathReason.BLACKHOLE,
        PathReason.ICMP_UNREACHABLE,
        PathReason.DIAL_FAILURE,
        PathReason.PEER_RELAYED,
    }
)


@dataclass(frozen=True, slots=True)
class PathEvent:
    """A path change of one peer, at monotonic time ``at``."""

    at: float
    path: Path
    reason: PathReason
    detail: str = ""


@dataclass(slots=True)
class Peer:
    """Mutable per-peer record, owned by the Node on the event-loop thread."""

    node_id: int
    cipher: PeerCipher
    addr: Addr | None
    relay_only: bool
    created_at: float
    path: Path = Path.DIRECT
    reason: PathReason = PathReason.PUNCHED
    events: deque[PathEvent] = field(default_factory=lambda: deque(maxlen=32))
    pkts_sent: int = 0
    bytes_sent: int = 0
    pkts_recv: int = 0
    bytes_recv: int = 0
    direct_recv: int = 0
    relay_recv: int = 0
    last_used: float = 0.0
    last_resolved: float = 0.0
    dial_deadline: float | None = None
    dial_probe_at: float = 0.0  # next dial re-probe (meaningful while dial_deadline is set)
    held: deque[bytes] = field(default_factory=deque)
    next_probe_at: float | None = None
    probe_backoff: float = 0.0
    probe_nonce: int = 0
    probes_sent: int = 0
    acks_recv: int = 0

    def record(self, now: float, path: Path, reason: PathReason, detail: str = "") -> None:
        """Set the path and reason and append an event to the bounded history."""
        self.path = path
        self.reason = reason
        self.events.append(PathEvent(now, path, reason, detail))


class PeerTable:
    """Peers by node ID and by direct address, capped at ``max_peers``."""

    def __init__(self, max_peers: int) -> None:
        self.max_peers = max_peers
        self._by_id: dict[int, Peer] = {}
        self._by_addr: dict[Addr, int] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, node_id: int) -> Peer | None:
        """The peer, or None."""
        return self._by_id.get(node_id)

    def by_addr(self, addr: Addr) -> Peer | None:
        """The peer whose direct address is ``addr``, or None."""
        node_id = self._by_addr.get(addr)
        return None if node_id is None else self._by_id.get(node_id)

    def add(self, peer: Peer) -> bool:
        """Insert or replace; False (nothing stored) when full and the ID is new."""
        old = self._by_id.get(peer.node_id)
        if old is None and len(self._by_id) >= self.max_peers:
            return False
        if old is not None and old.addr is not None:
            self._by_addr.pop(old.addr, None)
        self._by_id[peer.node_id] = peer
        if peer.addr is not None:
            self._by_addr[peer.addr] = peer.node_id
        return True

    def set_addr(self, peer: Peer, addr: Addr | None) -> None:
        """Move the peer to a new direct address (NAT re-map learning)."""
        if peer.addr == addr:
            return
        if peer.addr is not None and self._by_addr.get(peer.addr) == peer.node_id:
            del self._by_addr[peer.addr]
        peer.addr = addr
        if addr is not None:
            self._by_addr[addr] = peer.node_id

    def remove(self, node_id: int) -> Peer | None:
        """Delete and return the peer, or None."""
        peer = self._by_id.pop(node_id, None)
        if peer is not None and peer.addr is not None and self._by_addr.get(peer.addr) == node_id:
            del self._by_addr[peer.addr]
        return peer

    def values(self) -> list[Peer]:
        """All peers, by node ID."""
        return [self._by_id[k] for k in sorted(self._by_id)]
