"""A peer's path state in one place: candidates, checks, the chosen path and why.

The routing Manager owns the relay flags, pins and the blackhole/ICMP
counters (the seed's API); a :class:`Peer` holds everything the sidecar adds
around them: the peer's cipher, its candidate endpoints and what probing them
showed, the chosen direct address, the path and the reason for it, traffic
counters and a bounded history of path events.

Path changes follow :data:`TRANSITIONS` and nothing else (docs/protocol.md,
"Path states"): a table of ``(path, event) -> path``. The engine applies an
event with :meth:`Peer.apply`; a pair missing from the table is a bug and
raises :class:`~natroute.routing.errors.UsageError`.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from enum import Enum
from typing import Final

from natroute.routing.errors import UsageError
from natroute.routing.types import Addr

from .candidates import MAX_REMOTE_CANDIDATES, Candidate, CandidateKind
from .crypto import PeerCipher

__all__ = [
    "MAX_OUTSTANDING_PROBES",
    "RELAY_PATH",
    "TRANSITIONS",
    "CandidateState",
    "Path",
    "PathEvent",
    "PathReason",
    "Peer",
    "PeerEvent",
    "PeerTable",
]

#: Marks a probe sent through the relay (instead of a direct address).
RELAY_PATH: Final = ("relay", 0)
#: Probe nonces remembered per peer (older ones are forgotten: a late answer is lost).
MAX_OUTSTANDING_PROBES: Final = 64


class Path(Enum):
    """How frames to a peer travel."""

    DIRECT = "direct"
    RELAY = "relay"


class PathReason(Enum):
    """Why a peer's path is what it is (the reason codes shown to operators)."""

    # on the relay
    CHECKING = "checking"  # new peer: the relay carries data while the checks run
    NO_CANDIDATES = "no_candidates"  # nothing to probe: the peer published no endpoint
    RELAY_ONLY = "relay_only"  # checks failed; the peer is behind an endpoint-dependent NAT
    LOCAL_SYMMETRIC_NAT = "local_symmetric_nat"  # checks failed; we are behind one
    CHECKS_FAILED = "checks_failed"  # no candidate answered
    BLACKHOLE = "blackhole"  # the Manager's heuristic: the direct path went silent
    ICMP_UNREACHABLE = "icmp_unreachable"  # the Manager's heuristic: ICMP errors
    ONE_WAY = "one_way"  # the peer's frames arrive directly, our probes are not answered
    NO_UDP = "no_udp"  # we reach the beacon over a stream: no direct UDP path exists
    OPERATOR = "operator"  # pinned by an operator
    FORCED_RELAY = "forced_relay"  # our own setting: relay every peer
    PREDICTION_FAILED = "prediction_failed"  # a port-prediction spray found no open port
    # direct
    CHECKED = "checked"  # a candidate answered our probe
    DIRECT_RESTORED = "direct_restored"  # back to direct after a relay heuristic or failure
    BETTER_PATH = "better_path"  # another candidate answered faster (or the old one stopped)
    PREDICTED = "predicted"  # a port-prediction spray found the port (docs/protocol.md)


class PeerEvent(Enum):
    """What can happen to a peer's path."""

    START = "start"  # the peer is created (or re-created): relay first
    CHECK_SUCCEEDED = "check_succeeded"  # an authenticated answer to a direct probe
    CHECKS_FAILED = "checks_failed"  # a check window ended with no answer
    SWITCH = "switch"  # a better direct candidate
    HEURISTIC = "heuristic"  # the Manager flipped the peer (blackhole, ICMP)
    ONE_WAY = "one_way"
    PIN = "pin"  # operator or setting: relay for good
    UNPIN = "unpin"  # operator: allow direct again (checks decide)
    NO_UDP = "no_udp"  # our UDP is gone (stream transport)


#: ``(path, event) -> path``; every legal change, and only those.
TRANSITIONS: Final[dict[tuple[Path | None, PeerEvent], Path]] = {
    (None, PeerEvent.START): Path.RELAY,
    (Path.RELAY, PeerEvent.START): Path.RELAY,
    (Path.DIRECT, PeerEvent.START): Path.RELAY,
    (Path.RELAY, PeerEvent.CHECK_SUCCEEDED): Path.DIRECT,
    (Path.RELAY, PeerEvent.CHECKS_FAILED): Path.RELAY,
    (Path.DIRECT, PeerEvent.SWITCH): Path.DIRECT,
    (Path.DIRECT, PeerEvent.HEURISTIC): Path.RELAY,
    (Path.DIRECT, PeerEvent.ONE_WAY): Path.RELAY,
    (Path.DIRECT, PeerEvent.PIN): Path.RELAY,
    (Path.RELAY, PeerEvent.PIN): Path.RELAY,
    (Path.RELAY, PeerEvent.UNPIN): Path.RELAY,
    (Path.DIRECT, PeerEvent.NO_UDP): Path.RELAY,
    (Path.RELAY, PeerEvent.NO_UDP): Path.RELAY,
}


@dataclass(frozen=True, slots=True)
class PathEvent:
    """A path change of one peer, at monotonic time ``at``."""

    at: float
    path: Path
    reason: PathReason
    detail: str = ""


@dataclass(slots=True)
class CandidateState:
    """One remote candidate and what probing it showed."""

    candidate: Candidate
    learned_at: float
    probes_sent: int = 0
    acks: int = 0
    last_ack_at: float | None = None
    rtt: float | None = None  # smoothed round trip of answered probes, seconds
    failed_at: float | None = None  # an ICMP error or refused send for this address
    via: int = 0  # our local socket that reaches it (0: the peer socket; else a spray socket)
    predicted: bool = False  # found by a port-prediction spray

    @property
    def addr(self) -> Addr:
        """The candidate's address."""
        return self.candidate.addr

    def note_rtt(self, sample: float, now: float) -> None:
        """Fold one answered probe into the smoothed RTT (RFC 6298 style, alpha 1/8)."""
        self.acks += 1
        self.last_ack_at = now
        self.failed_at = None
        self.rtt = sample if self.rtt is None else self.rtt + (sample - self.rtt) / 8


@dataclass(slots=True)
class Peer:
    """Mutable per-peer record, owned by the engine."""

    node_id: int
    cipher: PeerCipher
    relay_only: bool
    created_at: float
    name: str = ""
    stream_only: bool = False  # the peer reaches its beacon over a stream (no UDP)
    path: Path | None = None
    reason: PathReason = PathReason.CHECKING
    pinned_by_operator: bool = False
    chosen: Addr | None = None
    via: int = 0  # the local socket of the chosen candidate (0: the peer socket)
    candidates: OrderedDict[Addr, CandidateState] = field(default_factory=OrderedDict)
    events: deque[PathEvent] = field(default_factory=lambda: deque(maxlen=32))
    # checks
    check_until: float | None = None  # the current check window ends then (None: no window)
    next_probe_at: float = 0.0  # next probe round inside the window
    probe_rounds: int = 0  # rounds sent in the current window
    next_check_at: float | None = None  # next window (backoff while relayed, re-evaluation)
    window_started_at: float | None = None  # the latest check window opened then
    backoff: float = 0.0
    last_cmm_sent: float | None = None
    outstanding: OrderedDict[int, tuple[Addr, float]] = field(default_factory=OrderedDict)
    keepalive_nonce: int | None = None  # the last direct keepalive probe
    unanswered: int = 0  # direct keepalive probes in a row with no answer
    next_keepalive_at: float = 0.0
    relay_rtt: float | None = None
    ping_results: deque[tuple[int, str, float]] = field(default_factory=lambda: deque(maxlen=16))
    # port prediction (docs/protocol.md, "Port prediction")
    predict_next_at: float = 0.0  # no spray with this peer before then
    predict_backoff: float = 0.0
    # liveness and traffic
    last_heard: float | None = None
    last_direct_at: float = float("-inf")  # the last authenticated direct receipt
    last_sent_at: float = float("-inf")  # the last frame written to the peer
    synced_recv_at: float = float("-inf")  # the Manager last told of a direct receipt
    synced_send_at: float = float("-inf")  # the Manager last told of a send
    last_used: float = 0.0
    last_resolved: float = 0.0
    pkts_sent: int = 0
    bytes_sent: int = 0
    pkts_recv: int = 0
    bytes_recv: int = 0
    direct_recv: int = 0
    relay_recv: int = 0
    probes_sent: int = 0
    acks_recv: int = 0

    def apply(self, event: PeerEvent, reason: PathReason, now: float, detail: str = "") -> None:
        """Change the path as :data:`TRANSITIONS` says and record the event.

        Raises:
            UsageError: the table has no such change (a bug in the engine).
        """
        new = TRANSITIONS.get((self.path, event))
        if new is None:
            raise UsageError(f"no path transition for {self.path} on {event.value}")
        self.path = new
        self.reason = reason
        self.events.append(PathEvent(now, new, reason, detail))

    @property
    def rtt(self) -> float | None:
        """The round trip of the path in use: the chosen candidate's, or the relay's."""
        if self.path is Path.DIRECT and self.chosen is not None:
            state = self.candidates.get(self.chosen)
            return state.rtt if state is not None else None
        return self.relay_rtt

    def add_candidate(self, candidate: Candidate, now: float) -> CandidateState | None:
        """Remember a remote candidate; None when the list is full (the oldest
        peer-reflexive entry gives way to an announced one)."""
        state = self.candidates.get(candidate.addr)
        if state is not None:
            if candidate.kind.rank < state.candidate.kind.rank:
                state.candidate = candidate  # announced beats learnt
            return state
        if len(self.candidates) >= MAX_REMOTE_CANDIDATES:
            victim = next(
                (
                    a
                    for a, s in self.candidates.items()
                    if s.candidate.kind is CandidateKind.PRFLX and a != self.chosen
                ),
                None,
            )
            if victim is None or candidate.kind is CandidateKind.PRFLX:
                return None
            del self.candidates[victim]
        state = self.candidates[candidate.addr] = CandidateState(candidate, now)
        return state

    def remember_probe(self, nonce: int, where: Addr, now: float) -> None:
        """Track a probe until its answer (or until it is among the oldest)."""
        self.outstanding[nonce] = (where, now)
        if len(self.outstanding) > MAX_OUTSTANDING_PROBES:
            self.outstanding.popitem(last=False)

    def best_candidate(self, since: float) -> CandidateState | None:
        """The candidate with the lowest RTT that answered at or after ``since``.

        Kind breaks ties (host before server-reflexive before peer-reflexive).
        """
        best: CandidateState | None = None
        best_key = (0.0, 0)
        for state in self.candidates.values():
            rtt = state.rtt
            if rtt is None or state.failed_at is not None:
                continue
            if state.last_ack_at is None or state.last_ack_at < since:
                continue
            key = (rtt, state.candidate.kind.rank)
            if best is None or key < best_key:
                best, best_key = state, key
        return best


class PeerTable:
    """Peers by node ID, and by every address they are known at, capped at ``max_peers``."""

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
        """The peer that has ``addr`` among its candidates, or None."""
        node_id = self._by_addr.get(addr)
        return None if node_id is None else self._by_id.get(node_id)

    def add(self, peer: Peer) -> bool:
        """Insert a new peer; False (nothing stored) when full."""
        if peer.node_id not in self._by_id and len(self._by_id) >= self.max_peers:
            return False
        self._by_id[peer.node_id] = peer
        return True

    def index(self, peer: Peer, addr: Addr) -> None:
        """Find ``peer`` by ``addr`` from now on (one of its candidates)."""
        self._by_addr[addr] = peer.node_id

    def unindex(self, peer: Peer, addr: Addr) -> None:
        """Stop finding ``peer`` by ``addr``."""
        if self._by_addr.get(addr) == peer.node_id:
            del self._by_addr[addr]

    def remove(self, node_id: int) -> Peer | None:
        """Delete and return the peer, or None."""
        peer = self._by_id.pop(node_id, None)
        if peer is not None:
            for addr in peer.candidates:
                self.unindex(peer, addr)
        return peer

    def values(self) -> list[Peer]:
        """All peers, by node ID."""
        return [self._by_id[k] for k in sorted(self._by_id)]
