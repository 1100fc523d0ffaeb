"""What the registry's routes depend on, as FastAPI dependencies.

Every dependency is a coroutine function: FastAPI runs plain ``def``
dependencies in its thread pool, a hop that costs more than the whole
pre-encoded beacon list answer.

``create_app`` puts one :class:`Services` on ``app.state.services``; routes
take the pieces they need through ``Annotated[..., Depends(...)]`` aliases
(``StoreDep``, ``SettingsDep``, ...), so a test can replace any of them with
``app.dependency_overrides``. Operator routes add :func:`require_operator`.
The three frequent calls (heartbeat, resolve, beacon list) skip FastAPI's
dependency solving altogether in their common case (:mod:`.lanes`); their
routes take the one ``ServicesDep`` for the rest.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request

from natroute._service.http import ApiError
from natroute._service.ratelimit import TokenBuckets

from .beaconlist import BeaconListCache
from .metrics import RegistryMetrics
from .settings import Settings
from .store import KeyCache, Store

__all__ = [
    "BeaconListDep",
    "ClockDep",
    "KeyCacheDep",
    "LimiterDep",
    "MetricsDep",
    "Services",
    "ServicesDep",
    "SettingsDep",
    "StoreDep",
    "get_beacon_list",
    "get_clock",
    "get_key_cache",
    "get_limiter",
    "get_metrics",
    "get_services",
    "get_settings",
    "get_store",
    "require_operator",
]


@dataclass
class Services:
    """Everything the routes share. ``store`` is ``None`` until the lifespan opened it."""

    settings: Settings
    clock: Callable[[], float]
    metrics: RegistryMetrics
    limiter: TokenBuckets[str]
    beacon_list: BeaconListCache
    keys: KeyCache
    token: bytes
    store: Store | None = None


async def get_services(request: Request) -> Services:
    """The app's :class:`Services`."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_store(services: ServicesDep) -> Store:
    """The open store.

    Raises:
        ApiError: 503 ``not_ready`` while the store is not open yet.
    """
    if services.store is None:
        raise ApiError(503, "not_ready", "the database is not open yet", {"Retry-After": "1"})
    return services.store


async def get_settings(services: ServicesDep) -> Settings:
    """The service settings."""
    return services.settings


async def get_metrics(services: ServicesDep) -> RegistryMetrics:
    """The app's metrics."""
    return services.metrics


async def get_limiter(services: ServicesDep) -> TokenBuckets[str]:
    """The per-client registration rate limiter."""
    return services.limiter


async def get_clock(services: ServicesDep) -> Callable[[], float]:
    """The wall clock (Unix seconds)."""
    return services.clock


async def get_key_cache(services: ServicesDep) -> KeyCache:
    """Node ID → Ed25519 key, read through to the store."""
    return services.keys


async def get_beacon_list(services: ServicesDep) -> BeaconListCache:
    """The pre-encoded beacon list."""
    return services.beacon_list


StoreDep = Annotated[Store, Depends(get_store)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[RegistryMetrics, Depends(get_metrics)]
LimiterDep = Annotated[TokenBuckets[str], Depends(get_limiter)]
ClockDep = Annotated[Callable[[], float], Depends(get_clock)]
BeaconListDep = Annotated[BeaconListCache, Depends(get_beacon_list)]
KeyCacheDep = Annotated[KeyCache, Depends(get_key_cache)]


async def require_operator(
    services: ServicesDep, authorization: Annotated[str | None, Header()] = None
) -> None:
    """Operator routes: ``Authorization: Bearer <token>`` (compared in constant time).

    Raises:
        ApiError: 401 without a bearer token, 403 with a wrong one.
    """
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise ApiError(
            401, "unauthorized", "operator bearer token required", {"WWW-Authenticate": "Bearer"}
        )
    if not secrets.compare_digest(given.strip().encode("utf-8", "surrogateescape"), services.token):
        raise ApiError(403, "forbidden", "operator token is not valid")
