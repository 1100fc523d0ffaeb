"""Prometheus pieces every natroute service exposes, on the service's own registry.

* ``natroute_build_info{version}`` = 1, the running natroute version;
* the process collector (``process_cpu_seconds_total``,
  ``process_resident_memory_bytes``, ``process_open_fds``, ...);
* :class:`RouteTimer`: a request-latency histogram by route template and
  method, with closed label sets (unknown routes are ``unmatched``, unknown
  methods ``other``), as ASGI middleware.

Each service keeps its own ``CollectorRegistry`` (never the global default),
so two apps in one process (tests) do not collide.
"""

from __future__ import annotations

import time
from typing import Any, Final

from prometheus_client import CollectorRegistry, Gauge, Histogram, ProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from natroute import __version__

__all__ = ["LATENCY_BUCKETS", "RouteTimer", "register_service_metrics"]

#: Latency buckets in seconds: sub-millisecond reads up to slow database writes.
LATENCY_BUCKETS: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def register_service_metrics(registry: CollectorRegistry) -> None:
    """Add ``natroute_build_info`` and the process collector to ``registry``."""
    info = Gauge(
        "natroute_build_info", "The running natroute version", ["version"], registry=registry
    )
    info.labels(version=__version__).set(1)
    ProcessCollector(registry=registry)


class RouteTimer:
    """ASGI middleware: observe each HTTP request's duration and count its status.

    Args:
        app: the wrapped application.
        latency: a histogram with labels ``route`` and ``method``.
        responses: a counter with labels ``route`` and ``status``.

    The route label is the matched route's path template (``/v1/nodes/{node_id}``),
    so the label sets are as closed as the app's route table.
    """

    def __init__(self, app: ASGIApp, *, latency: Histogram, responses: Any) -> None:
        self._app = app
        self._latency = latency
        self._responses = responses
        self._children: dict[tuple[str, str], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self._app(scope, receive, capture)
        finally:
            elapsed = time.perf_counter() - start
            route: Any = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope["method"] if scope["method"] in _METHODS else "other"
            key = (template, method)
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = self._latency.labels(route=template, method=method)
            child.observe(elapsed)
            self._responses.labels(route=template, status=str(status)).inc()
