"""The registry's HTTP shell: wiring of routers, dependencies and error handling.

Routes live in :mod:`.routes` (one router per resource) and take their
collaborators through the dependencies of :mod:`.deps`; decisions (IDs,
expiry, replay, names) live in the store. Errors of every kind become the one
error body here, in one table (:data:`ERROR_CODES`).

OpenAPI at ``/openapi.json``; Swagger UI at ``/docs`` and ReDoc at ``/redoc``
work offline (assets under ``/static/docs``).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Final

from fastapi import FastAPI
from starlette.types import ASGIApp

from natroute._service.docs import mount_offline_docs
from natroute._service.http import ErrorBody, install_error_handlers
from natroute._service.metrics import RouteTimer
from natroute._service.ratelimit import RateLimit, TokenBuckets

from .backends import open_store, store_config
from .beaconlist import BeaconListCache
from .deps import Services
from .http import BodyLimitMiddleware
from .lanes import FastLanes
from .metrics import RegistryMetrics
from .routes import beacons_router, nodes_router, ops_router
from .settings import Settings
from .sqlite import SqliteStore
from .store import (
    ClockSkewError,
    IdSpaceExhaustedError,
    KeyCache,
    NameTakenError,
    NodeNotFoundError,
    ReplayError,
    Store,
    StoreUnavailableError,
)

__all__ = ["ERROR_CODES", "create_app"]

_log = logging.getLogger(__name__)

#: The store's errors as HTTP statuses and error codes (the message is the error's text).
ERROR_CODES: Final[dict[type[Exception], tuple[int, str]]] = {
    NodeNotFoundError: (404, "not_found"),
    ReplayError: (409, "replayed"),
    NameTakenError: (409, "name_taken"),
    ClockSkewError: (401, "clock_skew"),
    IdSpaceExhaustedError: (503, "id_space_exhausted"),
    StoreUnavailableError: (503, "store_unavailable"),
}
_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    status: {"model": ErrorBody} for status in (400, 401, 403, 404, 409, 413, 422, 429, 503)
}


async def _preload_keys(services: Services) -> None:
    """Fill the key cache at start; the registry serves without it (the cache reads through)."""
    assert services.store is not None
    started = time.monotonic()
    try:
        count = await services.keys.preload(services.store)
    except StoreUnavailableError as exc:
        _log.warning("registry_key_preload_failed", extra={"error": str(exc)})
        return
    elapsed = round(time.monotonic() - started, 3)
    _log.info("registry_keys_preloaded", extra={"count": count, "seconds": elapsed})


class _RegistryApp(FastAPI):
    """FastAPI with the registry's own layers outside FastAPI's middleware.

    Request timing, the body limit and the fast lanes (:mod:`.lanes`) wrap
    FastAPI's server-error, exception and telemetry middleware instead of
    sitting inside it, so a lane's answer skips those too (about 18 µs of
    a request's CPU, decision D45); every other request passes through all.
    """

    outer_layers: Callable[[ASGIApp], ASGIApp] | None = None

    def build_middleware_stack(self) -> ASGIApp:
        inner = super().build_middleware_stack()
        return inner if self.outer_layers is None else self.outer_layers(inner)


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    close_store: bool | None = None,
    clock: Callable[[], float] | None = None,
    rng: random.Random | None = None,
) -> FastAPI:
    """Build the registry app.

    Args:
        settings: the service settings (see :class:`~.settings.Settings`).
        store: an open store to serve. Without one, a SQLite store is opened
            now and a PostgreSQL one by the app's lifespan.
        close_store: close the store at lifespan shutdown (default: only a
            store the app opened itself).
        clock: wall clock in Unix seconds (default ``time.time``); tests inject a fake.
        rng: node-ID randomness (default ``random.SystemRandom``).

    Returns:
        The app; ``app.state.services`` holds what the routes share.

    Raises:
        StoreUnavailableError: the SQLite database cannot be opened.
    """
    now_fn = clock if clock is not None else time.time
    owned = store is None if close_store is None else close_store
    if store is None and settings.postgres_url() is None:
        store = SqliteStore(settings.db, store_config(settings), clock=now_fn, rng=rng)
    metrics = RegistryMetrics()
    services = Services(
        settings=settings,
        clock=now_fn,
        metrics=metrics,
        # The handlers run on the event loop's thread only: no lock is needed.
        limiter=TokenBuckets(
            RateLimit(settings.register_rate, settings.register_burst),
            settings.rate_limit_clients,
        ),
        beacon_list=BeaconListCache(
            now_fn, settings.beacon_ttl, on_build=metrics.beacon_list_builds.inc
        ),
        keys=KeyCache(settings.key_cache_size),
        token=settings.operator_token().encode(),
    )

    def attach(opened: Store) -> None:
        services.store = opened
        opened.on_beacons_changed(services.beacon_list.invalidate)

    if store is not None:
        attach(store)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if services.store is None:
            attach(await open_store(settings, clock=now_fn, rng=rng))
        await _preload_keys(services)
        try:
            yield
        finally:
            if owned and services.store is not None:
                await services.store.close()

    app = _RegistryApp(
        title="natroute registry",
        version="1",
        summary="Node identities, endpoint resolution and the beacon list.",
        lifespan=lifespan,
        responses=_RESPONSES,
        docs_url=None,
        redoc_url=None,
    )
    app.state.services = services
    errors = install_error_handlers(
        app, codes=ERROR_CODES, on_error=metrics.count_error, log_event="registry_request_failed"
    )
    lane_routes = [*beacons_router.routes, *nodes_router.routes]

    def outer_layers(inner: ASGIApp) -> ASGIApp:
        lanes = FastLanes(inner, owner=app, errors=errors, routes=lane_routes)
        limited = BodyLimitMiddleware(
            lanes, max_bytes=settings.max_body_bytes, on_error=metrics.count_error
        )
        return RouteTimer(limited, latency=metrics.request_duration, responses=metrics.requests)

    app.outer_layers = outer_layers
    # Routes are matched in order: the frequent calls first (those FastLanes
    # passes on), the documentation last.
    app.include_router(beacons_router)
    app.include_router(nodes_router)
    app.include_router(ops_router)
    mount_offline_docs(app)
    return app
