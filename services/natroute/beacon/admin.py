"""Admin HTTP app: health, readiness, Prometheus metrics and a JSON status.

The app only reads :class:`~natroute.beacon.stats.BeaconSnapshot` objects
from a :class:`BeaconView`; it never touches core internals. Metrics use a
per-app ``CollectorRegistry`` whose one collector turns a fresh snapshot
into metric families at scrape time, so counters are never kept twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .stats import BeaconSnapshot

__all__ = ["BeaconView", "SnapshotCollector", "create_app", "snapshot_json"]


class BeaconView(Protocol):
    """What the admin app reads: a snapshot and readiness."""

    @property
    def ready(self) -> bool:
        """True once the UDP socket is bound."""
        ...

    def snapshot(self) -> BeaconSnapshot:
        """An immutable copy of the core's state."""
        ...


_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("received", "natroute_beacon_received", "Datagrams received"),
    ("discovers", "natroute_beacon_discovers", "Discover messages received"),
    ("registrations", "natroute_beacon_registrations", "Node IDs recorded or moved"),
    ("authenticated", "natroute_beacon_authenticated", "Signed discovers that bound a key"),
    ("punches", "natroute_beacon_punches_coordinated", "Punch requests answered"),
    ("relayed_packets", "natroute_beacon_relayed_packets", "Relay frames delivered locally"),
    ("relayed_bytes", "natroute_beacon_relayed_bytes", "Relay payload bytes delivered"),
    ("forwarded_packets", "natroute_beacon_forwarded_packets", "Relay frames sent to peers"),
    ("forwarded_bytes", "natroute_beacon_forwarded_bytes", "Relay payload bytes forwarded"),
    ("syncs_received", "natroute_beacon_syncs_received", "Sync datagrams accepted"),
    ("syncs_sent", "natroute_beacon_syncs_sent", "Sync datagrams sent"),
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


def snapshot_json(snap: BeaconSnapshot) -> dict[str, Any]:
    """The ``/v1/status`` body for a snapshot."""
    return {
        "beacon_id": snap.beacon_id,
        "strict": snap.strict,
        "nodes": snap.nodes,
        "signed_nodes": snap.signed_nodes,
        "gossip_entries": snap.gossip_entries,
        "gossip_peers": list(snap.peers),
        "counters": {field: getattr(snap, field) for field, _, _ in _COUNTERS}
        | {"discover_replies": snap.discover_replies},
        "drops": dict(snap.drops),
        "dropped_total": snap.dropped_total,
    }


def create_app(view: BeaconView) -> FastAPI:
    """Build the admin app.

    Args:
        view: source of snapshots and readiness (the running service).

    Returns:
        A FastAPI app with ``/healthz``, ``/readyz``, ``/metrics`` and
        ``/v1/status``.
    """
    app = FastAPI(title="natroute beacon", docs_url=None, redoc_url=None, openapi_url=None)
    registry = CollectorRegistry()
    registry.register(SnapshotCollector(view))

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        if view.ready:
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "starting"}, status_code=503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/status")
    async def status() -> dict[str, Any]:
        return snapshot_json(view.snapshot())

    return app
