"""The registry's HTTP shell: FastAPI routes over :class:`~.store.Store`.

Routes (all JSON, versioned under ``/v1``; OpenAPI at ``/openapi.json``):

* ``POST /v1/nodes`` — register (signed, rate limited per client IP)
* ``POST /v1/nodes/{node_id}/heartbeat`` — stay alive (signed)
* ``GET /v1/nodes/{node_id}`` — resolve (spec §4.3)
* ``PUT /v1/nodes/{node_id}/relay_only``, ``DELETE /v1/nodes/{node_id}`` — operator
* ``POST /v1/beacons`` (operator token), ``GET /v1/beacons`` (spec §4.2)
* ``/healthz``, ``/readyz``, ``/metrics``

Endpoints are plain ``def``: FastAPI runs them in its threadpool, so the
blocking SQLite calls never stall the event loop. Decisions (IDs, expiry,
replay) live in the store; this module checks signatures and tokens and maps
outcomes to HTTP.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import random
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, Final

from fastapi import Depends, FastAPI, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from natroute.routing.addr import MAX_NODE_ID, split_host_port

from .http import ApiError, BodyLimitMiddleware, RequestMetricsMiddleware, install_error_handlers
from .metrics import RegistryMetrics
from .models import (
    NAME_PATTERN,
    BeaconEntry,
    BeaconListResponse,
    BeaconRegisterRequest,
    BeaconRegisterResponse,
    CandidateEntry,
    ErrorBody,
    HeartbeatRequest,
    HeartbeatResponse,
    NodeListResponse,
    NodeView,
    RegisterRequest,
    RegisterResponse,
    RelayOnlyRequest,
    RelayOnlyResponse,
    address_problem,
)
from .ratelimit import RateLimiter
from .settings import Settings
from .signing import (
    ACTION_HEARTBEAT,
    ACTION_REGISTER,
    KEY_LEN,
    SIGNATURE_LEN,
    b64decode_exact,
    b64encode,
    verify,
)
from .store import (
    ClockSkewError,
    IdSpaceExhaustedError,
    NameTakenError,
    NodeNotFoundError,
    NodeRecord,
    ReplayError,
    Store,
    StoreConfig,
)

__all__ = ["create_app", "node_view"]

_log = logging.getLogger(__name__)
_DAY: Final = 86400.0
_ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    status: {"model": ErrorBody} for status in (400, 401, 403, 404, 409, 413, 422, 429)
}
NodeIdPath = Annotated[int, Path(ge=1, le=MAX_NODE_ID, description="32-bit node ID (non-zero)")]
NodeNamePath = Annotated[str, Path(max_length=63, pattern=NAME_PATTERN, description="node name")]


def node_view(record: NodeRecord, relay_addr: str | None, now: float) -> NodeView:
    """The resolve answer for ``record`` (spec §4.3).

    Args:
        record: the live node.
        relay_addr: the beacon address handed out for relay-only nodes.
        now: current time, for ``key_age_days``.
    """
    relay = record.relay_only
    return NodeView(
        node_id=record.node_id,
        name=record.name,
        endpoint=relay_addr if relay else record.endpoint,
        lan_addrs=None if relay else list(record.lan_addrs),
        candidates=[CandidateEntry(addr=addr, kind=kind) for addr, kind in record.candidates],
        relay_only=True if relay else None,
        transport=record.transport,
        ed25519_public_key=b64encode(record.ed25519_public_key),
        x25519_public_key=(
            None if record.x25519_public_key is None else b64encode(record.x25519_public_key)
        ),
        last_seen=record.last_seen,
        key_age_days=max(0, int((now - record.created_at) // _DAY)),
    )


def _check_addresses(
    allow_local: bool,
    endpoint: str | None,
    lan_addrs: list[str] | None,
    candidates: list[CandidateEntry] | None,
) -> None:
    """Refuse loopback and link-local node addresses unless ``allow_local``.

    The models already refused what is never valid (multicast, broadcast,
    unspecified); this is the part that depends on the registry's settings.
    """
    if allow_local:
        return
    fields: list[tuple[str, str]] = [] if endpoint is None else [("endpoint", endpoint)]
    fields += [(f"lan_addrs.{i}", a) for i, a in enumerate(lan_addrs or ())]
    fields += [(f"candidates.{i}.addr", c.addr) for i, c in enumerate(candidates or ())]
    for field, text in fields:
        host, _ = split_host_port(text)
        problem = address_problem(ipaddress.ip_address(host), allow_local=False)
        if problem is not None:
            raise ApiError(422, "invalid_request", f"{field}: {text} {problem}")


def _check_signature(key: bytes, signature_b64: str, action: str, fields: dict[str, Any]) -> None:
    if not verify(key, b64decode_exact(signature_b64, SIGNATURE_LEN), action, fields):
        raise ApiError(401, "bad_signature", "signature does not verify for this key and payload")


def _timestamp_error(exc: ClockSkewError | ReplayError, now: float) -> ApiError:
    if isinstance(exc, ReplayError):
        return ApiError(409, "replayed", str(exc))
    return ApiError(401, "clock_skew", f"{exc} (registry time {now:.3f})")


def create_app(
    settings: Settings,
    *,
    clock: Callable[[], float] | None = None,
    rng: random.Random | None = None,
) -> FastAPI:
    """Build the registry app; opens (and migrates) the SQLite database now.

    Args:
        settings: the service settings (see :class:`~.settings.Settings`).
        clock: wall clock in Unix seconds (default ``time.time``); tests inject a fake.
        rng: node-ID randomness (default ``random.SystemRandom``).

    Returns:
        The app; its lifespan shutdown closes the database (``app.state.store``).
    """
    now_fn = clock if clock is not None else time.time
    token = settings.operator_token().encode()
    store = Store(
        settings.db,
        StoreConfig(
            node_ttl=settings.node_ttl,
            beacon_ttl=settings.beacon_ttl,
            retention=settings.retention,
            signature_skew=settings.signature_skew,
            synchronous=settings.sqlite_synchronous,
        ),
        clock=now_fn,
        rng=rng,
    )
    metrics = RegistryMetrics()
    limiter = RateLimiter(
        settings.register_rate, settings.register_burst, settings.rate_limit_clients
    )
    node_ttl = max(1, round(settings.node_ttl))
    beacon_ttl = max(1, round(settings.beacon_ttl))
    retry_after = str(max(1, math.ceil(1 / settings.register_rate)))
    heartbeat_interval = max(1, node_ttl // 3)
    allow_local = settings.local_endpoints_allowed()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        store.close()

    app = FastAPI(
        title="natroute registry",
        version="1",
        summary="Node identities, endpoint resolution and the beacon list (ROUTING.md §4).",
        lifespan=lifespan,
        responses=_ERRORS,
    )
    app.state.store = store
    app.state.metrics = metrics
    install_error_handlers(app, metrics)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes, metrics=metrics)
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)

    def require_operator(authorization: Annotated[str | None, Header()] = None) -> None:
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise ApiError(
                401,
                "unauthorized",
                "operator bearer token required",
                {"WWW-Authenticate": "Bearer"},
            )
        if not secrets.compare_digest(given.strip().encode("utf-8", "surrogateescape"), token):
            raise ApiError(403, "forbidden", "operator token is not valid")

    Operator = Depends(require_operator)

    @app.post("/v1/nodes", response_model=RegisterResponse, tags=["nodes"])
    def register(body: RegisterRequest, request: Request) -> RegisterResponse:
        """Register (or re-register) a node; proves possession of its Ed25519 key."""
        client = request.client.host if request.client is not None else "unknown"
        if not limiter.allow(client, now_fn()):
            raise ApiError(
                429,
                "rate_limited",
                "too many registrations from this address",
                {"Retry-After": retry_after},
            )
        _check_addresses(allow_local, body.endpoint, body.lan_addrs, body.candidates)
        key = b64decode_exact(body.ed25519_public_key, KEY_LEN)
        _check_signature(
            key,
            body.signature,
            ACTION_REGISTER,
            body.model_dump(exclude={"signature"}, exclude_unset=True),
        )
        try:
            record, created = store.register(
                key,
                x25519_public_key=(
                    None
                    if body.x25519_public_key is None
                    else b64decode_exact(body.x25519_public_key, KEY_LEN)
                ),
                endpoint=body.endpoint,
                lan_addrs=body.lan_addrs,
                relay_only=body.relay_only,
                timestamp_us=body.timestamp_us,
                candidates=[(c.addr, c.kind) for c in body.candidates],
                transport=body.transport,
                name=body.name,
            )
        except (ClockSkewError, ReplayError) as exc:
            raise _timestamp_error(exc, now_fn()) from exc
        except NameTakenError as exc:
            raise ApiError(409, "name_taken", str(exc)) from exc
        except IdSpaceExhaustedError as exc:
            raise ApiError(503, "id_space_exhausted", str(exc)) from exc
        metrics.registrations.labels(kind="new" if created else "again").inc()
        _log.debug("node_registered", extra={"node_id": record.node_id, "client": client})
        return RegisterResponse(
            node_id=record.node_id,
            relay_only=record.relay_only,
            ttl=node_ttl,
            heartbeat_interval=heartbeat_interval,
        )

    @app.post("/v1/nodes/{node_id}/heartbeat", response_model=HeartbeatResponse, tags=["nodes"])
    def heartbeat(node_id: NodeIdPath, body: HeartbeatRequest) -> HeartbeatResponse:
        """Keep a node alive; may update its endpoint, candidates, transport and ``relay_only``."""
        _check_addresses(allow_local, body.endpoint, None, body.candidates)
        key = store.identity_key(node_id)
        if key is None:
            raise ApiError(404, "not_found", f"node {node_id} is not registered")
        fields = body.model_dump(exclude={"signature"}, exclude_unset=True) | {"node_id": node_id}
        _check_signature(key, body.signature, ACTION_HEARTBEAT, fields)
        try:
            record = store.heartbeat(
                node_id,
                timestamp_us=body.timestamp_us,
                endpoint=body.endpoint,
                relay_only=body.relay_only,
                candidates=(
                    None if body.candidates is None else [(c.addr, c.kind) for c in body.candidates]
                ),
                transport=body.transport,
            )
        except NodeNotFoundError as exc:
            raise ApiError(404, "not_found", f"{exc}; register again") from exc
        except (ClockSkewError, ReplayError) as exc:
            raise _timestamp_error(exc, now_fn()) from exc
        metrics.heartbeats.inc()
        return HeartbeatResponse(node_id=node_id, relay_only=record.relay_only, ttl=node_ttl)

    def relay_addr() -> str | None:
        """The beacon address handed out for relay-only nodes (spec §4.3)."""
        if settings.beacon_addr is not None:
            return settings.beacon_addr
        beacons = store.live_beacons()
        return beacons[0].addr if beacons else None

    @app.get(
        "/v1/nodes/{node_id}",
        response_model=NodeView,
        response_model_exclude_none=True,
        tags=["nodes"],
    )
    def resolve(node_id: NodeIdPath) -> NodeView:
        """Resolve a live node (spec §4.3); relay-only nodes get a beacon address."""
        try:
            record = store.resolve(node_id)
        except NodeNotFoundError as exc:
            raise ApiError(404, "not_found", str(exc)) from exc
        return node_view(record, relay_addr() if record.relay_only else None, now_fn())

    @app.get(
        "/v1/names/{name}",
        response_model=NodeView,
        response_model_exclude_none=True,
        tags=["nodes"],
    )
    def resolve_name(name: NodeNamePath) -> NodeView:
        """Resolve the live node registered under ``name``."""
        try:
            record = store.resolve_name(name)
        except NodeNotFoundError as exc:
            raise ApiError(404, "not_found", str(exc)) from exc
        return node_view(record, relay_addr() if record.relay_only else None, now_fn())

    @app.get(
        "/v1/nodes",
        response_model=NodeListResponse,
        response_model_exclude_none=True,
        dependencies=[Operator],
        tags=["operator"],
    )
    def list_nodes(limit: Annotated[int, Query(ge=1, le=10000)] = 1000) -> NodeListResponse:
        """Operator: live nodes by ID (at most ``limit``), as resolve would show each."""
        now, relay = now_fn(), relay_addr()
        return NodeListResponse(nodes=[node_view(r, relay, now) for r in store.live_nodes(limit)])

    @app.put(
        "/v1/nodes/{node_id}/relay_only",
        response_model=RelayOnlyResponse,
        response_model_exclude_none=True,
        dependencies=[Operator],
        tags=["operator"],
    )
    def force_relay_only(node_id: NodeIdPath, body: RelayOnlyRequest) -> RelayOnlyResponse:
        """Operator: force ``relay_only`` on (true) or off (false), or clear the force (null)."""
        try:
            record = store.set_relay_only_force(node_id, body.force)
        except NodeNotFoundError as exc:
            raise ApiError(404, "not_found", str(exc)) from exc
        _log.info("operator_relay_only_set", extra={"node_id": node_id, "force": body.force})
        return RelayOnlyResponse(
            node_id=node_id, relay_only=record.relay_only, forced=record.relay_only_forced
        )

    @app.delete("/v1/nodes/{node_id}", status_code=204, dependencies=[Operator], tags=["operator"])
    def delete_node(node_id: NodeIdPath) -> Response:
        """Operator: drop a node's record (its ID stays reserved for its key)."""
        try:
            store.delete_node(node_id)
        except NodeNotFoundError as exc:
            raise ApiError(404, "not_found", str(exc)) from exc
        _log.info("operator_node_deleted", extra={"node_id": node_id})
        return Response(status_code=204)

    @app.post(
        "/v1/beacons",
        response_model=BeaconRegisterResponse,
        response_model_exclude_none=True,
        dependencies=[Operator],
        tags=["beacons"],
    )
    def register_beacon(body: BeaconRegisterRequest) -> BeaconRegisterResponse:
        """A beacon (re-)registers; it is listed for ``ttl`` seconds (spec §4.2)."""
        store.register_beacon(body.beacon_id, body.addr, body.stream_url)
        metrics.beacon_registrations.inc()
        _log.debug("beacon_registered", extra={"beacon_id": body.beacon_id, "addr": body.addr})
        return BeaconRegisterResponse(
            beacon_id=body.beacon_id, addr=body.addr, stream_url=body.stream_url, ttl=beacon_ttl
        )

    @app.get(
        "/v1/beacons",
        response_model=BeaconListResponse,
        response_model_exclude_none=True,
        tags=["beacons"],
    )
    def list_beacons() -> BeaconListResponse:
        """Live beacons (registered within the beacon TTL), by ID (spec §4.2)."""
        return BeaconListResponse(
            beacons=[
                BeaconEntry(id=b.beacon_id, addr=b.addr, stream_url=b.stream_url)
                for b in store.live_beacons()
            ]
        )

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"])
    def readyz() -> JSONResponse:
        """Readiness: the database answers a query."""
        try:
            store.ping()
        except sqlite3.Error as exc:
            raise ApiError(503, "not_ready", f"database unavailable: {exc}") from exc
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", include_in_schema=False)
    def prometheus() -> Response:
        nodes, beacons = store.live_counts()
        metrics.live_nodes.set(nodes)
        metrics.live_beacons.set(beacons)
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return app
