"""Prometheus metrics of one sidecar admin app, read from a status snapshot per scrape.

One ``CollectorRegistry`` per app (never the global default; nothing at
import time). Its one collector turns the :class:`~.status.SidecarStatus`
handed to :meth:`SidecarMetrics.render` into metric families, so the core
never keeps counters twice.

Label sets are bounded by enums and fixed words only: drop reasons
(:class:`~.model.DropReason`), path reasons (:class:`~.peers.PathReason`),
NAT types, list sources, ``path``/``direction``. There are no per-peer or
per-beacon labels.

Counters come from the Node's own totals (path changes by reason, frames
and bytes including peers already removed), so they never go down.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from natroute._service.metrics import register_service_metrics
from natroute.routing.refresh import ListSource, PickReason

from .model import NatType
from .status import SidecarStatus

__all__ = ["CONTENT_TYPE_LATEST", "SidecarMetrics"]


def _gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"natroute_sidecar_{name}", text, value=value)


def _labelled_counter(
    name: str, text: str, label: str, values: Iterable[tuple[str, float]]
) -> CounterMetricFamily:
    family = CounterMetricFamily(f"natroute_sidecar_{name}", text, labels=[label])
    for key, value in values:
        family.add_metric([key], value)
    return family


def _one_hot(name: str, text: str, label: str, options: Iterable[str], current: str) -> Metric:
    family = GaugeMetricFamily(f"natroute_sidecar_{name}", text, labels=[label])
    for option in options:
        family.add_metric([option], 1.0 if option == current else 0.0)
    return family


class _SnapshotCollector(Collector):
    """Yields the families of the snapshot its owner set for this scrape."""

    def __init__(self, owner: SidecarMetrics) -> None:
        self._owner = owner

    def collect(self) -> Iterator[Metric]:
        status = self._owner.current
        if status is None:
            return
        yield from _node_families(status)
        yield from _traffic_families(status)
        yield from _beacon_families(status)


def _node_families(s: SidecarStatus) -> Iterator[Metric]:
    yield _gauge("ready", "1 once start-up finished and traffic can flow", float(s.ready))
    yield _gauge("registered", "1 while registered at the registry", float(s.registered))
    yield _gauge("relay_only", "1 when this node registered as relay_only", float(s.relay_only))
    yield _gauge("uptime_seconds", "Seconds since the sidecar started", s.uptime)
    yield _one_hot(
        "transport",
        "How the node reaches its beacon (1 for the current transport)",
        "transport",
        ("udp", "stream"),
        s.transport,
    )
    yield _one_hot(
        "nat_type",
        "NAT classification (1 for the current type)",
        "type",
        (t.value for t in NatType),
        s.nat.type,
    )
    peers = GaugeMetricFamily(
        "natroute_sidecar_peers", "Known peers by the Manager's path", labels=["path"]
    )
    peers.add_metric(["direct"], s.peers_direct)
    peers.add_metric(["relay"], s.peers_relay)
    yield peers
    yield _gauge("peers_offline", "Peers silent for longer than offline_after", s.peers_offline)


def _traffic_families(s: SidecarStatus) -> Iterator[Metric]:
    c = s.counters
    yield _labelled_counter(
        "drops", "Datagrams dropped, by reason", "reason", sorted(c.drops.items())
    )
    yield _labelled_counter(
        "path_changes",
        "Peer path changes, by reason code",
        "reason",
        sorted(c.path_changes.items()),
    )
    yield CounterMetricFamily(
        "natroute_sidecar_icmp_errors_attributed",
        "ICMP errors read from the socket's error queue and charged to their peer",
        value=c.icmp_errors_attributed,
    )
    pkts_sent, bytes_sent, pkts_recv, bytes_recv = (
        c.pkts_sent,
        c.bytes_sent,
        c.pkts_recv,
        c.bytes_recv,
    )
    yield _labelled_counter(
        "peer_packets",
        "Authenticated frames to and from peers",
        "direction",
        (("sent", pkts_sent), ("received", pkts_recv)),
    )
    yield _labelled_counter(
        "peer_bytes",
        "Frame bytes to and from peers",
        "direction",
        (("sent", bytes_sent), ("received", bytes_recv)),
    )
    yield _labelled_counter(
        "receipts",
        "Authenticated frames received, by path",
        "path",
        (("direct", c.direct_in), ("relay", c.relayed_in)),
    )
    yield CounterMetricFamily(
        "natroute_sidecar_punches_received", "Punch datagrams received", value=c.punches_received
    )
    yield CounterMetricFamily(
        "natroute_sidecar_punch_commands",
        "Punch commands executed (from the current beacon)",
        value=c.punch_commands,
    )
    yield _labelled_counter(
        "app_datagrams",
        "Data-plane datagrams from and to the local application",
        "direction",
        (("from_app", c.app_received), ("to_app", c.app_delivered)),
    )
    yield _labelled_counter(
        "app_dropped",
        "Data-plane datagrams dropped, by reason",
        "reason",
        (
            ("short", c.app_dropped_short),
            ("no_app", c.app_dropped_no_app),
            ("own_socket", c.app_dropped_self),
        ),
    )
    yield CounterMetricFamily(
        "natroute_sidecar_app_foreign_sources",
        "Data-plane datagrams from a socket other than the learned application",
        value=c.app_foreign_sources,
    )
    yield CounterMetricFamily(
        "natroute_sidecar_app_target_changes",
        "Times the delivery target moved to a new application socket (the old one was gone)",
        value=c.app_target_changes,
    )
    yield CounterMetricFamily(
        "natroute_sidecar_lookups_started",
        "Registry look-ups started",
        value=c.lookups_started,
    )
    yield _gauge("lookups_queued", "Registry look-ups waiting for a worker", c.lookups_queued)
    yield _gauge("lookups_in_flight", "Registry look-ups running", c.lookups_in_flight)
    yield _gauge("held_frames", "Frames of unknown senders waiting for a look-up", c.held_frames)
    yield _gauge(
        "held_payloads", "Payloads to unknown peers waiting for a look-up", c.held_payloads
    )
    yield CounterMetricFamily(
        "natroute_sidecar_dial_budget_refused_bytes",
        "Bytes not sent to unverified addresses (dialling budget)",
        value=c.dial_budget_refused_bytes,
    )
    yield CounterMetricFamily(
        "natroute_sidecar_endpoint_changes_rejected",
        "Public endpoint changes rejected for lack of confirmation",
        value=c.endpoint_changes_rejected,
    )
    yield _gauge("asyncio_tasks", "The sidecar's asyncio tasks", c.tasks)
    yield from _predict_families(s)


def _predict_families(s: SidecarStatus) -> Iterator[Metric]:
    p = s.predict
    yield _gauge("predict_enabled", "1 when port prediction is on", float(p.enabled))
    yield _labelled_counter(
        "predict_sprays",
        "Port-prediction sprays (either role): started, and how they ended",
        "outcome",
        (("started", p.started), ("succeeded", p.succeeded), ("failed", p.failed)),
    )
    yield _gauge("predict_sprays_active", "Port-prediction sprays under way", p.active)
    yield CounterMetricFamily(
        "natroute_sidecar_predict_declined", "Spray offers this node declined", value=p.declined
    )
    yield CounterMetricFamily(
        "natroute_sidecar_predict_probes", "Spray probes sent", value=p.probes_sent
    )
    yield CounterMetricFamily(
        "natroute_sidecar_predict_bytes", "Spray probe frame bytes sent", value=p.bytes_sent
    )
    yield _gauge(
        "spray_sockets_open", "Spray sockets open (spraying or carrying a path)", p.sockets_open
    )
    yield _gauge("spray_sockets_kept", "Spray sockets carrying a direct path", p.sockets_kept)


def _beacon_families(s: SidecarStatus) -> Iterator[Metric]:
    b = s.beacon
    yield _gauge(
        "beacons", "Beacons in the merged list, each counted once (by address)", b.distinct
    )
    yield _gauge("beacon_picked", "1 while a beacon is picked", float(bool(b.pick)))
    yield _one_hot(
        "beacon_pick_reason",
        "Why the beacon was picked (1 for the current reason)",
        "reason",
        (r.value for r in PickReason),
        b.reason or "",
    )
    yield _one_hot(
        "beacon_list_source",
        "Where the last refresh got its list (1 for the current)",
        "source",
        (src.value for src in ListSource),
        b.source,
    )
    yield _gauge(
        "beacon_refresh_errors",
        "Errors reported by the last refresh tick",
        len(b.last_refresh_errors),
    )
    if b.last_refresh_age is not None:
        yield _gauge(
            "beacon_refresh_age_seconds", "Seconds since the last refresh tick", b.last_refresh_age
        )
    if b.last_reply_age is not None:
        yield _gauge(
            "beacon_reply_age_seconds", "Seconds since the beacon last answered", b.last_reply_age
        )
    if b.cache_age is not None:
        yield _gauge("beacon_cache_age_seconds", "Age of the on-disk beacon cache", b.cache_age)


class SidecarMetrics:
    """The admin app's metrics: a per-app registry read from one snapshot per scrape.

    Call :meth:`render` with a fresh snapshot per scrape (on the loop thread).
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.current: SidecarStatus | None = None
        self._lock = threading.Lock()
        self.registry.register(_SnapshotCollector(self))
        register_service_metrics(self.registry)

    def render(self, status: SidecarStatus) -> bytes:
        """The text exposition of ``status``."""
        with self._lock:
            self.current = status
            try:
                return generate_latest(self.registry)
            finally:
                self.current = None
