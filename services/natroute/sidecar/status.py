"""Immutable snapshots of a running sidecar, for the admin API, metrics and the CLI.

Every view of the sidecar (``/v1/status``, ``/v1/peers``, ``/metrics``, the
HTML page, ``natroute status``) reads these frozen dataclasses and never the
core's internals. A snapshot is built on the event-loop thread (the Node is
only touched there); its dict and tuple fields are fresh copies that share
nothing with the core, so a snapshot may be kept, serialised or compared
after the core has moved on.

Ages are seconds before ``taken_at`` on the sidecar's monotonic clock
(``sidecar.clock()``); ``None`` means "never". The few raw ``*_at`` fields
are on that same monotonic clock, only useful for correlation.

The beacon cache's age is a wall-clock difference (the cache stores an
RFC 3339 ``saved_at``: docs/protocol.md, "Beacon cache"); reading it touches
the disk, so callers read it with :func:`read_cache_age` (in a worker thread)
only when a status is requested, and pass the result to :func:`build_status`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from natroute.routing.addr import format_addr
from natroute.routing.cache import load_beacon_cache_entry
from natroute.routing.errors import CacheError
from natroute.routing.manager import PeerRouting
from natroute.routing.refresh import ListSource, PickReason, RefreshOutcome
from natroute.routing.types import Addr

from .engine import Engine
from .model import DropReason
from .peers import Path, PathReason, Peer

if TYPE_CHECKING:  # the service is only needed for typing; views stay light to import
    from .service import Sidecar

__all__ = [
    "BeaconStatus",
    "CacheAge",
    "CandidateStatus",
    "CounterStatus",
    "NatStatus",
    "PathEventStatus",
    "PeerStatus",
    "PredictStatus",
    "RefreshResult",
    "SidecarStatus",
    "StreamStatus",
    "build_peer",
    "build_peer_status",
    "build_peers",
    "build_predict_status",
    "build_refresh_result",
    "build_status",
    "format_age",
    "read_cache_age",
]


@dataclass(frozen=True, slots=True)
class CacheAge:
    """The on-disk beacon cache ("Beacon cache") as seen at status time.

    Attributes:
        age: seconds since the cache was saved (wall clock); None without a cache.
        addrs: how many addresses it holds.
        error: why it could not be read, or "".
    """

    age: float | None = None
    addrs: int = 0
    error: str = ""


@dataclass(frozen=True, slots=True)
class PathEventStatus:
    """One recorded path change of a peer."""

    path: str
    reason: str
    detail: str
    age: float
    at: float


@dataclass(frozen=True, slots=True)
class CandidateStatus:
    """One remote candidate of a peer and what probing it showed."""

    addr: str
    kind: str
    probes_sent: int
    acks: int
    rtt_ms: float | None
    last_ack_age: float | None
    failed: bool
    chosen: bool


@dataclass(frozen=True, slots=True)
class PeerStatus:
    """One peer: its path and why, liveness, RTTs, candidates, counters and history.

    ``path``/``reason`` are the engine's view (``direct``/``relay`` and a
    :class:`~.peers.PathReason` value); ``relay``/``pinned`` are the routing
    Manager's flags, which decide where frames go (the engine pins every
    relayed peer, so that only an answered probe brings it back);
    ``operator_pinned`` is an operator's pin, which stops the checks. ``state`` is ``online``
    while authenticated frames keep arriving, ``offline`` once the peer has
    been silent for ``offline_after`` seconds, ``new`` before it was ever heard.
    ``addr`` is the direct address in use (None on the relay); ``socket``
    the local socket that carries it (0: the peer socket; another index: a
    spray socket kept by port prediction). ``prediction`` is a spray under
    way with this peer (``role:stage``, e.g. ``hard:spraying``), or None.
    """

    node_id: int
    name: str
    path: str
    reason: str
    detail: str
    state: str
    relay: bool
    pinned: bool
    operator_pinned: bool
    relay_only: bool
    addr: str | None
    socket: int
    prediction: str | None
    rtt_ms: float | None
    relay_rtt_ms: float | None
    checking: bool
    next_check_in: float | None
    candidates: tuple[CandidateStatus, ...]
    known_for: float
    last_heard_age: float | None
    last_direct_recv_age: float | None
    last_send_age: float | None
    last_used_age: float
    blackhole_misses: int
    send_errors: int
    direct_clears: int
    pkts_sent: int
    bytes_sent: int
    pkts_recv: int
    bytes_recv: int
    direct_recv: int
    relay_recv: int
    probes_sent: int
    acks_recv: int
    events: tuple[PathEventStatus, ...]
    created_at: float


@dataclass(frozen=True, slots=True)
class NatStatus:
    """The NAT classification and the per-beacon observations that decided it."""

    type: str
    observations: dict[str, str]


@dataclass(frozen=True, slots=True)
class BeaconStatus:
    """Beacon list, pick and why (docs/protocol.md, "Beacon pick", "Refresh tick")."""

    pick: str
    addr: str | None
    reason: str | None
    source: str
    beacons: tuple[str, ...]
    distinct: int
    bootstrap: tuple[str, ...]
    discovered: tuple[str, ...]
    rtt_ms: dict[str, float]
    swapped: bool
    last_refresh_age: float | None
    last_refresh_errors: tuple[str, ...]
    last_reply_age: float | None
    cache_age: float | None
    cache_addrs: int
    cache_error: str


@dataclass(frozen=True, slots=True)
class CounterStatus:
    """Node-wide counters; every :class:`~.node.DropReason` is present (zero or not)."""

    drops: dict[str, int]
    dropped_total: int
    direct_in: int
    relayed_in: int
    punches_received: int
    punch_commands: int
    app_received: int
    app_delivered: int
    app_dropped_short: int
    app_dropped_no_app: int
    app_dropped_self: int
    app_foreign_sources: int
    app_target_changes: int
    icmp_errors_attributed: int
    path_changes: dict[str, int]
    pkts_sent: int
    bytes_sent: int
    pkts_recv: int
    bytes_recv: int
    lookups_started: int
    lookups_queued: int
    lookups_in_flight: int
    held_frames: int
    held_payloads: int
    dial_budget_refused_bytes: int
    endpoint_changes_rejected: int
    tasks: int


@dataclass(frozen=True, slots=True)
class PredictStatus:
    """Port prediction (docs/protocol.md, "Port prediction"): the switch and totals.

    ``started`` counts sprays begun in either role (offers sent, offers
    accepted); each ends ``succeeded`` or ``failed``; ``active`` are under
    way. ``sockets_open`` are spray sockets open now (spraying, or kept
    because they carry a direct path: ``sockets_kept``).
    """

    enabled: bool
    started: int
    succeeded: int
    failed: int
    active: int
    declined: int
    probes_sent: int
    bytes_sent: int
    sockets_open: int
    sockets_kept: int
    sockets_opened: int
    sockets_closed: int


@dataclass(frozen=True, slots=True)
class StreamStatus:
    """The stream relay session (a WebSocket to the beacon while UDP is blocked)."""

    url: str | None
    beacon: str | None
    open: bool
    attached_for: float | None
    attaches: int
    next_udp_try_in: float | None
    sent: int
    received: int
    dropped: int
    last_error: str


@dataclass(frozen=True, slots=True)
class SidecarStatus:
    """The whole node at one instant."""

    node_id: int | None
    ready: bool
    registered: bool
    relay_only: bool
    uptime: float
    public_endpoint: str | None
    local_addr: str | None
    app_addr: str | None
    nat: NatStatus
    transport: str
    stream: StreamStatus
    beacon: BeaconStatus
    counters: CounterStatus
    predict: PredictStatus
    peers_total: int
    peers_direct: int
    peers_relay: int
    peers_offline: int
    peers: tuple[PeerStatus, ...] = field(default=())
    taken_at: float = 0.0


@dataclass(frozen=True, slots=True)
class RefreshResult:
    """What ``POST /v1/beacons/refresh`` did (one "Refresh tick")."""

    source: str
    reason: str
    pick: str
    swapped: bool
    registered: bool
    beacons: tuple[str, ...]
    discovered: tuple[str, ...]
    rtt_ms: dict[str, float]
    errors: tuple[str, ...]


def _addr(addr: Addr | None) -> str | None:
    return format_addr(addr) if addr is not None else None


def _age(now: float, at: float | None) -> float | None:
    return None if at is None else max(0.0, now - at)


def format_age(seconds: float | None) -> str:
    """A short human age: ``-`` for never, ``850ms``, ``12.3s``, ``4m05s``, ``2h07m``, ``3d04h``."""
    if seconds is None:
        return "-"
    if seconds < 1.0:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60.0:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def read_cache_age(identity_path: str, wall_now: float) -> CacheAge:
    """Read the beacon cache beside ``identity_path`` (blocking: a small file read).

    Args:
        identity_path: the sidecar's identity file (``settings.identity``).
        wall_now: Unix seconds (``sidecar.wall_clock()``).

    Returns:
        The cache's age and size, or the read error as text; never raises.
    """
    try:
        entry = load_beacon_cache_entry(identity_path)
    except CacheError as exc:
        return CacheAge(error=str(exc))
    if entry is None:
        return CacheAge()
    if entry.saved_at.year <= 1:  # no saved_at in the file: decoded as datetime.min
        return CacheAge(None, len(entry.addrs), "cache has no saved_at")
    return CacheAge(max(0.0, wall_now - entry.saved_at.timestamp()), len(entry.addrs))


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


def _liveness(peer: Peer, now: float, offline_after: float) -> str:
    if peer.last_heard is None:
        return "offline" if now - peer.created_at > offline_after else "new"
    return "offline" if now - peer.last_heard > offline_after else "online"


def build_peer_status(
    peer: Peer,
    routing: PeerRouting,
    now: float,
    offline_after: float = 45.0,
    prediction: str | None = None,
) -> PeerStatus:
    """Snapshot one peer from the engine's record and the Manager's snapshot.

    Args:
        peer: the engine's record (read on the loop thread).
        routing: ``manager.peer_routing(peer.node_id)``.
        now: the sidecar's monotonic clock.
        offline_after: silence after which the peer counts as offline.
        prediction: the spray under way with the peer (``role:stage``), if any.
    """
    direct = peer.path is Path.DIRECT
    return PeerStatus(
        node_id=peer.node_id,
        name=peer.name,
        path=peer.path.value if peer.path is not None else "relay",
        reason=peer.reason.value,
        detail=peer.events[-1].detail if peer.events else "",
        state=_liveness(peer, now, offline_after),
        relay=routing.relay,
        pinned=routing.pinned,
        operator_pinned=peer.pinned_by_operator,
        relay_only=peer.relay_only,
        addr=_addr(peer.chosen) if direct else None,
        socket=peer.via if direct else 0,
        prediction=prediction,
        rtt_ms=_ms(peer.rtt),
        relay_rtt_ms=_ms(peer.relay_rtt),
        checking=peer.check_until is not None,
        next_check_in=None if peer.next_check_at is None else peer.next_check_at - now,
        candidates=tuple(
            CandidateStatus(
                addr=format_addr(c.addr),
                kind=c.candidate.kind.value,
                probes_sent=c.probes_sent,
                acks=c.acks,
                rtt_ms=_ms(c.rtt),
                last_ack_age=_age(now, c.last_ack_at),
                failed=c.failed_at is not None,
                chosen=direct and c.addr == peer.chosen,
            )
            for c in peer.candidates.values()
        ),
        known_for=max(0.0, now - peer.created_at),
        last_heard_age=_age(now, peer.last_heard),
        last_direct_recv_age=_age(now, routing.last_direct_recv),
        last_send_age=_age(now, routing.last_outbound_send),
        last_used_age=max(0.0, now - peer.last_used),
        blackhole_misses=routing.blackhole_misses,
        send_errors=routing.send_errors,
        direct_clears=routing.direct_clears,
        pkts_sent=peer.pkts_sent,
        bytes_sent=peer.bytes_sent,
        pkts_recv=peer.pkts_recv,
        bytes_recv=peer.bytes_recv,
        direct_recv=peer.direct_recv,
        relay_recv=peer.relay_recv,
        probes_sent=peer.probes_sent,
        acks_recv=peer.acks_recv,
        events=tuple(
            PathEventStatus(e.path.value, e.reason.value, e.detail, max(0.0, now - e.at), e.at)
            for e in peer.events
        ),
        created_at=peer.created_at,
    )


def build_peer(sidecar: Sidecar, node_id: int) -> PeerStatus | None:
    """One peer of the sidecar, or None when it has no such peer."""
    engine = sidecar.engine
    peer = engine.peers.get(node_id)
    if peer is None:
        return None
    spray = engine.sprays.get(node_id)
    return build_peer_status(
        peer,
        sidecar.manager.peer_routing(node_id),
        sidecar.clock(),
        engine.config.offline_after,
        spray.label if spray is not None else None,
    )


def build_peers(sidecar: Sidecar, now: float | None = None) -> tuple[PeerStatus, ...]:
    """Every peer of the sidecar, by node ID."""
    engine = sidecar.engine
    at = sidecar.clock() if now is None else now
    manager = sidecar.manager
    offline_after = engine.config.offline_after
    sprays = engine.sprays
    return tuple(
        build_peer_status(
            p,
            manager.peer_routing(p.node_id),
            at,
            offline_after,
            sprays[p.node_id].label if p.node_id in sprays else None,
        )
        for p in engine.peers.values()
    )


def _counters(engine: Engine, sidecar: Sidecar) -> CounterStatus:
    drops = {r.value: engine.drops[r] for r in DropReason}
    app = sidecar.app
    totals = engine.traffic_totals()
    lookups = engine.lookups
    return CounterStatus(
        drops=drops,
        dropped_total=sum(drops.values()),
        direct_in=engine.direct_in,
        relayed_in=engine.relayed_in,
        punches_received=engine.punches_received,
        punch_commands=engine.punch_commands,
        app_received=app.received if app else 0,
        app_delivered=app.delivered if app else 0,
        app_dropped_short=app.dropped_short if app else 0,
        app_dropped_no_app=app.dropped_no_app if app else 0,
        app_dropped_self=app.dropped_self if app else 0,
        app_foreign_sources=app.foreign_sources if app else 0,
        app_target_changes=app.target_changes if app else 0,
        icmp_errors_attributed=sidecar.icmp_errors_attributed,
        path_changes={r.value: engine.path_changes[r] for r in PathReason},
        pkts_sent=totals[0],
        bytes_sent=totals[1],
        pkts_recv=totals[2],
        bytes_recv=totals[3],
        lookups_started=lookups.started,
        lookups_queued=lookups.queued,
        lookups_in_flight=lookups.in_flight,
        held_frames=engine.waiting.held_frames,
        held_payloads=engine.waiting.held_payloads,
        dial_budget_refused_bytes=engine.budget.refused_bytes,
        endpoint_changes_rejected=engine.observer.rejected,
        tasks=sidecar.task_count,
    )


def build_predict_status(engine: Engine) -> PredictStatus:
    """Port prediction's switch and totals."""
    c = engine.predict_counters
    return PredictStatus(
        enabled=engine.predict.enabled,
        started=c.started,
        succeeded=c.succeeded,
        failed=c.failed,
        active=len(engine.sprays),
        declined=c.declined,
        probes_sent=c.probes_sent,
        bytes_sent=c.bytes_sent,
        sockets_open=engine.spray_sockets_open,
        sockets_kept=len(engine.kept_sockets),
        sockets_opened=c.sockets_opened,
        sockets_closed=c.sockets_closed,
    )


def _rtt_ms(outcome: RefreshOutcome | None) -> dict[str, float]:
    if outcome is None:
        return {}
    return {addr: round(rtt * 1000.0, 3) for addr, rtt in sorted(outcome.rtt.items())}


def _beacon(sidecar: Sidecar, now: float, cache: CacheAge) -> BeaconStatus:
    bootstrap, current, pick = sidecar.selection.snapshot()
    last = sidecar.last_refresh
    reason: PickReason | None = last.reason if last is not None else None
    return BeaconStatus(
        pick=pick,
        addr=_addr(sidecar.manager.beacon_addr()),
        reason=reason.value if reason is not None else None,
        source=(last.source if last is not None else ListSource.NONE).value,
        beacons=tuple(current),
        distinct=sidecar.distinct_beacons,
        bootstrap=tuple(bootstrap),
        discovered=tuple(last.discovered) if last is not None else (),
        rtt_ms=_rtt_ms(last),
        swapped=last.swapped if last is not None else False,
        last_refresh_age=_age(now, sidecar.last_refresh_at),
        last_refresh_errors=tuple(last.errors) if last is not None else (),
        last_reply_age=_age(now, sidecar.health.last_reply),
        cache_age=cache.age,
        cache_addrs=cache.addrs,
        cache_error=cache.error,
    )


def _stream(sidecar: Sidecar, now: float) -> StreamStatus:
    link = sidecar.stream
    client = link.client
    counters = client.counters if client is not None else None
    on_stream = sidecar.transport.value == "stream"
    return StreamStatus(
        url=link.target.url if link.target else None,
        beacon=link.target.beacon if link.target else None,
        open=link.open,
        attached_for=_age(now, link.attached_at),
        attaches=link.attaches,
        next_udp_try_in=link.next_udp_try - now if on_stream else None,
        sent=counters.sent if counters else 0,
        received=counters.received if counters else 0,
        dropped=(counters.dropped_queue_full + counters.dropped_closed) if counters else 0,
        last_error=link.last_error,
    )


def build_status(
    sidecar: Sidecar,
    *,
    cache: CacheAge | None = None,
    include_peers: bool = True,
    clock: Callable[[], float] | None = None,
) -> SidecarStatus:
    """Snapshot the whole sidecar; call on the event-loop thread.

    Args:
        sidecar: the running (or starting) sidecar.
        cache: the beacon cache reading (:func:`read_cache_age`); default: unknown.
        include_peers: False leaves ``peers`` empty (the counts are still filled).
        clock: overrides ``sidecar.clock`` (tests).

    Returns:
        A :class:`SidecarStatus` whose ages are relative to ``taken_at``.
    """
    now = (clock or sidecar.clock)()
    engine = sidecar.engine
    # The counts come from the engine's records, as each PeerStatus would show them,
    # so a caller that needs only the counts (``/metrics``) builds no peer snapshot.
    records = list(engine.peers.values())
    direct = sum(1 for p in records if p.path is Path.DIRECT)
    offline_after = engine.config.offline_after
    offline = sum(1 for p in records if _liveness(p, now, offline_after) == "offline")
    return SidecarStatus(
        node_id=engine.node_id,
        ready=sidecar.ready,
        registered=sidecar.registered,
        relay_only=sidecar.relay_only,
        uptime=max(0.0, now - sidecar.started_at),
        public_endpoint=_addr(sidecar.public_endpoint),
        local_addr=_addr(sidecar.local_addr),
        app_addr=_addr(sidecar.app_addr),
        nat=NatStatus(
            sidecar.nat_type.value,
            {beacon: format_addr(a) for beacon, a in sorted(sidecar.nat_observations.items())},
        ),
        transport=sidecar.transport.value,
        stream=_stream(sidecar, now),
        beacon=_beacon(sidecar, now, cache or CacheAge()),
        counters=_counters(engine, sidecar),
        predict=build_predict_status(engine),
        peers_total=len(records),
        peers_direct=direct,
        peers_relay=len(records) - direct,
        peers_offline=offline,
        peers=build_peers(sidecar, now) if include_peers else (),
        taken_at=now,
    )


def build_refresh_result(sidecar: Sidecar, outcome: RefreshOutcome) -> RefreshResult:
    """Describe one refresh tick's outcome for the operator."""
    decision = outcome.decision
    return RefreshResult(
        source=outcome.source.value,
        reason=outcome.reason.value,
        pick=sidecar.selection.get_current_pick(),
        swapped=outcome.swapped,
        registered=outcome.registered,
        beacons=tuple(decision.new_list) if decision is not None else (),
        discovered=tuple(outcome.discovered),
        rtt_ms=_rtt_ms(outcome),
        errors=tuple(outcome.errors),
    )
