"""Admin HTTP app: health, readiness, Prometheus metrics, a JSON status and the stream relay.

Wiring only: one router for the admin routes, whose collaborators come
through dependencies (``Annotated[BeaconView, Depends(get_view)]``, so tests
can override them), and the ``/v1/relay`` WebSocket route handed to the
:class:`~natroute.beacon.streams.StreamHub`. Every route has a response
model, so ``/openapi.json`` describes the whole API.

The app only reads :class:`~natroute.beacon.stats.BeaconSnapshot` objects
from a :class:`BeaconView`; it never touches core internals. Metrics use a
per-app ``CollectorRegistry`` whose one collector turns a fresh snapshot
into metric families at scrape time, so counters are never kept twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Literal, Protocol

from fastapi import APIRouter, Depends, FastAPI, Request, Response, WebSocket
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from pydantic import BaseModel

from natroute._service.docs import mount_offline_docs
from natroute._service.http import install_error_handlers
from natroute._service.metrics import register_service_metrics

from .stats import BeaconSnapshot
from .streamproto import STREAM_PATH
from .streams import StreamHub

__all__ = [
    "BeaconView",
    "HealthResponse",
    "ReadyResponse",
    "SnapshotCollector",
    "StatusResponse",
    "StreamStatus",
    "create_app",
    "get_hub",
    "get_registry",
    "get_view",
    "snapshot_json",
]


class BeaconView(Protocol):
    """What the admin app reads: a snapshot and readiness."""

    @property
    def ready(self) -> bool:
        """True once the UDP socket is bound."""
        ...

    def snapshot(self) -> BeaconSnapshot:
        """An immutable copy of the core's state."""
        ...


class HealthResponse(BaseModel):
    """``GET /healthz``: the process answers."""

    status: Literal["ok"] = "ok"


class ReadyResponse(BaseModel):
    """``GET /readyz``: 200 ``ready`` once the UDP socket is bound, else 503 ``starting``."""

    status: Literal["ready", "starting"]


class StreamStatus(BaseModel):
    """The stream relay part of ``/v1/status``."""

    enabled: bool
    url: str | None
    sessions: int
    counters: dict[str, int]


class StatusResponse(BaseModel):
    """``GET /v1/status``: the beacon's tables and counters."""

    beacon_id: int
    strict: bool
    nodes: int
    signed_nodes: int
    gossip_entries: int
    gossip_peers: list[str]
    counters: dict[str, int]
    drops: dict[str, int]
    dropped_total: int
    stream: StreamStatus


_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("received", "natroute_beacon_received", "Datagrams received"),
    ("discovers", "natroute_beacon_discovers", "Discover messages received"),
    ("registrations", "natroute_beacon_registrations", "Node IDs recorded or moved"),
    ("authenticated", "natroute_beacon_authenticated", "Signed discovers that bound a key"),
    ("punches", "natroute_beacon_punches_coordinated", "Punch requests answered"),
    (
        "punches_forwarded",
        "natroute_beacon_punches_forwarded",
        "Punch requests forwarded to the peer beacon holding the target",
    ),
    ("relayed_packets", "natroute_beacon_relayed_packets", "Relay frames delivered locally"),
    ("relayed_bytes", "natroute_beacon_relayed_bytes", "Relay payload bytes delivered"),
    ("forwarded_packets", "natroute_beacon_forwarded_packets", "Relay frames sent to peers"),
    ("forwarded_bytes", "natroute_beacon_forwarded_bytes", "Relay payload bytes forwarded"),
    ("syncs_received", "natroute_beacon_syncs_received", "Sync datagrams accepted"),
    ("syncs_sent", "natroute_beacon_syncs_sent", "Sync datagrams sent"),
    ("early_syncs", "natroute_beacon_early_syncs", "Gossip rounds sent early for new nodes"),
    ("expired_nodes", "natroute_beacon_expired_nodes", "Node entries expired"),
    ("evicted_nodes", "natroute_beacon_evicted_nodes", "Unsigned entries evicted for signed"),
)


class SnapshotCollector(Collector):
    """Prometheus collector reading one snapshot per scrape."""

    def __init__(self, view: BeaconView) -> None:
        self._view = view

    def collect(self) -> Iterator[Metric]:
        snap = self._view.snapshot()
        yield GaugeMetricFamily("natroute_beacon_nodes", "Node entries held", value=snap.nodes)
        yield GaugeMetricFamily(
            "natroute_beacon_signed_nodes", "Node entries with a bound key", value=snap.signed_nodes
        )
        yield GaugeMetricFamily(
            "natroute_beacon_gossip_entries",
            "Node IDs known from peer beacons",
            value=snap.gossip_entries,
        )
        yield GaugeMetricFamily(
            "natroute_beacon_gossip_peers", "Peer beacons gossiped with", value=len(snap.peers)
        )
        for field, name, text in _COUNTERS:
            yield CounterMetricFamily(name, text, value=getattr(snap, field))
        dropped = CounterMetricFamily(
            "natroute_beacon_dropped", "Datagrams dropped, by reason", labels=["reason"]
        )
        for reason, count in snap.drops.items():
            dropped.add_metric([reason], count)
        yield dropped
        yield GaugeMetricFamily(
            "natroute_beacon_stream_sessions",
            "Stream relay sessions open",
            value=snap.stream_sessions,
        )
        stream = CounterMetricFamily(
            "natroute_beacon_stream_events",
            "Stream relay events: attached, closed, rejected_<reason>, sent, received, dropped_*",
            labels=["event"],
        )
        for event, count in sorted(snap.stream.items()):
            stream.add_metric([event], count)
        yield stream


def snapshot_json(snap: BeaconSnapshot) -> StatusResponse:
    """The ``/v1/status`` body for a snapshot."""
    return StatusResponse(
        beacon_id=snap.beacon_id,
        strict=snap.strict,
        nodes=snap.nodes,
        signed_nodes=snap.signed_nodes,
        gossip_entries=snap.gossip_entries,
        gossip_peers=list(snap.peers),
        counters={field: getattr(snap, field) for field, _, _ in _COUNTERS}
        | {"discover_replies": snap.discover_replies},
        drops=dict(snap.drops),
        dropped_total=snap.dropped_total,
        stream=StreamStatus(
            enabled=snap.stream_url is not None,
            url=snap.stream_url,
            sessions=snap.stream_sessions,
            counters=dict(snap.stream),
        ),
    )


def get_view(request: Request) -> BeaconView:
    """The running beacon (dependency; tests may override it)."""
    view: BeaconView = request.app.state.view
    return view


def get_registry(request: Request) -> CollectorRegistry:
    """The app's Prometheus registry (dependency)."""
    registry: CollectorRegistry = request.app.state.metrics
    return registry


View = Annotated[BeaconView, Depends(get_view)]
router = APIRouter()


@router.get("/healthz", response_model=HealthResponse, tags=["health"])
async def healthz() -> HealthResponse:
    """Liveness: the process answers."""
    return HealthResponse()


@router.get(
    "/readyz",
    response_model=ReadyResponse,
    responses={503: {"model": ReadyResponse, "description": "UDP socket not bound yet"}},
    tags=["health"],
)
async def readyz(view: View) -> JSONResponse:
    """Readiness: the UDP socket is bound and serving."""
    if view.ready:
        return JSONResponse(ReadyResponse(status="ready").model_dump())
    return JSONResponse(ReadyResponse(status="starting").model_dump(), status_code=503)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"}},
    tags=["metrics"],
)
async def metrics(registry: Annotated[CollectorRegistry, Depends(get_registry)]) -> Response:
    """Prometheus metrics (text exposition format)."""
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/status", response_model=StatusResponse, tags=["status"])
async def status(view: View) -> StatusResponse:
    """Tables, counters and drops by reason."""
    return snapshot_json(view.snapshot())


def get_hub(websocket: WebSocket) -> StreamHub:
    """The stream hub (dependency of the WebSocket route)."""
    hub: StreamHub = websocket.app.state.hub
    return hub


stream_router = APIRouter()


@stream_router.websocket(STREAM_PATH)
async def relay(websocket: WebSocket, hub: Annotated[StreamHub, Depends(get_hub)]) -> None:
    """Stream relay session (WebSocket; beacon README "Stream relay")."""
    client = websocket.client
    peer = (client.host, client.port) if client is not None else ("0.0.0.0", 0)
    await hub.serve(websocket, peer)


def create_app(view: BeaconView, hub: StreamHub | None = None) -> FastAPI:
    """Build the admin app.

    Args:
        view: source of snapshots and readiness (the running service).
        hub: the stream relay; ``/v1/relay`` is served only when given.

    Returns:
        A FastAPI app with ``/healthz``, ``/readyz``, ``/metrics``,
        ``/v1/status``, ``/openapi.json`` and (with a hub) ``/v1/relay``.
    """
    app = FastAPI(
        title="natroute beacon",
        summary="Admin API and stream relay of a natroute beacon",
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app, log_event="beacon_admin_request_failed")
    mount_offline_docs(app)
    app.state.view = view
    app.state.metrics = CollectorRegistry()
    app.state.metrics.register(SnapshotCollector(view))
    register_service_metrics(app.state.metrics)
    app.include_router(router)
    if hub is not None:
        app.state.hub = hub
        app.include_router(stream_router)
    return app
