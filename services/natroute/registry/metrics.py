"""Prometheus metrics of one registry app, on its own ``CollectorRegistry``.

One registry per app (never the global default), so two apps in one process
(tests) do not collide and nothing happens at import time.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from natroute._service.metrics import LATENCY_BUCKETS, register_service_metrics

__all__ = ["RegistryMetrics"]


class RegistryMetrics:
    """Counters, gauges and the latency histogram of the registry service."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        register_service_metrics(self.registry)
        self.requests = Counter(
            "natroute_registry_requests",
            "HTTP responses by route template and status code",
            ["route", "status"],
            registry=self.registry,
        )
        self.request_duration = Histogram(
            "natroute_registry_request_duration_seconds",
            "Time from request to complete response, by route template and method",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "natroute_registry_errors",
            "Refused or failed requests by error code (bad input is counted here)",
            ["code"],
            registry=self.registry,
        )
        self.registrations = Counter(
            "natroute_registry_registrations",
            "Accepted node registrations",
            ["kind"],
            registry=self.registry,
        )
        self.heartbeats = Counter(
            "natroute_registry_heartbeats",
            "Accepted node heartbeats",
            registry=self.registry,
        )
        self.beacon_registrations = Counter(
            "natroute_registry_beacon_registrations",
            "Accepted beacon (re-)registrations",
            registry=self.registry,
        )
        self.beacon_list_builds = Counter(
            "natroute_registry_beacon_list_builds",
            "Times the pre-encoded beacon list was rebuilt from the database",
            registry=self.registry,
        )
        self.live_nodes = Gauge(
            "natroute_registry_live_nodes",
            "Nodes heard from within the node TTL (updated on scrape)",
            registry=self.registry,
        )
        self.live_beacons = Gauge(
            "natroute_registry_live_beacons",
            "Beacons registered within the beacon TTL (updated on scrape)",
            registry=self.registry,
        )

    def count_error(self, code: str) -> None:
        """Count one refused or failed request."""
        self.errors.labels(code=code).inc()

    def render(self) -> bytes:
        """The text exposition of every metric."""
        return generate_latest(self.registry)
