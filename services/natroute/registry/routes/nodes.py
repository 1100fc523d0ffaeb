"""``/v1/nodes`` and ``/v1/names``: register, heartbeat, resolve, operator calls.

The routes check what HTTP owns (signatures, the address policy that depends
on the settings, the per-client rate) and leave every decision about IDs,
replay, expiry and names to the store; the store's errors become status
codes in one place (``app.py``).
"""

from __future__ import annotations

import ipaddress
import logging
import math
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel

from natroute._service.http import ApiError
from natroute.routing.addr import MAX_NODE_ID, split_host_port

from ..beaconlist import BeaconListCache
from ..deps import (
    BeaconListDep,
    ClockDep,
    KeyCacheDep,
    LimiterDep,
    MetricsDep,
    Services,
    ServicesDep,
    SettingsDep,
    StoreDep,
    get_store,
    require_operator,
)
from ..models import (
    NAME_PATTERN,
    CandidateEntry,
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
from ..settings import Settings
from ..signing import (
    ACTION_HEARTBEAT,
    ACTION_REGISTER,
    KEY_LEN,
    SIGNATURE_LEN,
    b64decode_exact,
    b64encode,
    verify,
)
from ..store import NodeRecord, Store

__all__ = ["heartbeat_answer", "node_view", "resolve_answer", "router"]

_log = logging.getLogger(__name__)
_DAY: Final = 86400.0
_JSON: Final = "application/json"
NodeIdPath = Annotated[int, Path(ge=1, le=MAX_NODE_ID, description="32-bit node ID (non-zero)")]
NodeNamePath = Annotated[str, Path(max_length=63, pattern=NAME_PATTERN, description="node name")]

router = APIRouter(tags=["nodes"])
_operator = [Depends(require_operator)]


def node_view(record: NodeRecord, relay_addr: str | None, now: float) -> NodeView:
    """The resolve answer for ``record`` (README, "Node IDs and expiry").

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


def _json(model: BaseModel, *, exclude_none: bool = False) -> Response:
    """``model`` as the response body, serialised once (FastAPI would validate it again)."""
    return Response(model.model_dump_json(exclude_none=exclude_none), media_type=_JSON)


async def _view(services: Services, store: Store, record: NodeRecord) -> NodeView:
    relay = None
    if record.relay_only:
        relay = await _relay_addr(services.settings, services.beacon_list, store)
    return node_view(record, relay, services.clock())


async def _relay_addr(settings: Settings, beacons: BeaconListCache, store: Store) -> str | None:
    """The beacon address handed out for relay-only nodes."""
    if settings.beacon_addr is not None:
        return settings.beacon_addr
    return await beacons.first_addr(store)


def _check_addresses(
    settings: Settings,
    endpoint: str | None,
    lan_addrs: list[str] | None,
    candidates: list[CandidateEntry] | None,
) -> None:
    """Refuse loopback and link-local node addresses unless the settings allow them.

    The models already refused what is never valid (multicast, broadcast,
    unspecified); this is the part that depends on the registry's settings.
    """
    if settings.local_endpoints_allowed():
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


@router.post("/v1/nodes", response_model=RegisterResponse)
async def register(
    body: RegisterRequest,
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    limiter: LimiterDep,
    metrics: MetricsDep,
    clock: ClockDep,
    keys: KeyCacheDep,
) -> RegisterResponse:
    """Register (or re-register) a node; proves possession of its Ed25519 key."""
    client = request.client.host if request.client is not None else "unknown"
    if not limiter.allow(client, clock()):
        retry_after = str(max(1, math.ceil(1 / settings.register_rate)))
        raise ApiError(
            429,
            "rate_limited",
            "too many registrations from this address",
            {"Retry-After": retry_after},
        )
    _check_addresses(settings, body.endpoint, body.lan_addrs, body.candidates)
    key = b64decode_exact(body.ed25519_public_key, KEY_LEN)
    fields = body.model_dump(exclude={"signature"}, exclude_unset=True)
    _check_signature(key, body.signature, ACTION_REGISTER, fields)
    record, created = await store.register(
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
    keys.put(record.node_id, record.ed25519_public_key)  # its heartbeats need no key read
    metrics.registrations.labels(kind="new" if created else "again").inc()
    _log.debug("node_registered", extra={"node_id": record.node_id, "client": client})
    node_ttl = max(1, round(settings.node_ttl))
    return RegisterResponse(
        node_id=record.node_id,
        relay_only=record.relay_only,
        ttl=node_ttl,
        heartbeat_interval=max(1, node_ttl // 3),
    )


async def heartbeat_answer(services: Services, node_id: int, body: HeartbeatRequest) -> bytes:
    """Keep ``node_id`` alive as ``body`` asks; the encoded answer.

    Shared by the route and the heartbeat's fast lane (:mod:`..lanes`).

    Raises:
        ApiError: a refused address, an unknown node or a bad signature.
        StoreError: a replay, a timestamp outside the skew window, the store failing.
    """
    store, settings = await get_store(services), services.settings
    _check_addresses(settings, body.endpoint, None, body.candidates)
    key = await services.keys.get(store, node_id)
    if key is None:
        raise ApiError(404, "not_found", f"node {node_id} is not registered")
    fields = body.model_dump(exclude={"signature"}, exclude_unset=True) | {"node_id": node_id}
    _check_signature(key, body.signature, ACTION_HEARTBEAT, fields)
    record = await store.heartbeat(
        node_id,
        timestamp_us=body.timestamp_us,
        endpoint=body.endpoint,
        relay_only=body.relay_only,
        candidates=None if body.candidates is None else [(c.addr, c.kind) for c in body.candidates],
        transport=body.transport,
    )
    services.metrics.heartbeats.inc()
    ttl = max(1, round(settings.node_ttl))
    answer = HeartbeatResponse(node_id=node_id, relay_only=record.relay_only, ttl=ttl)
    return answer.model_dump_json().encode()


@router.post("/v1/nodes/{node_id}/heartbeat", response_model=HeartbeatResponse)
async def heartbeat(node_id: NodeIdPath, body: HeartbeatRequest, services: ServicesDep) -> Response:
    """Keep a node alive; may update its endpoint, candidates, transport and ``relay_only``."""
    return Response(await heartbeat_answer(services, node_id, body), media_type=_JSON)


async def resolve_answer(services: Services, node_id: int) -> bytes:
    """The encoded resolve answer for ``node_id`` (shared with :mod:`..lanes`).

    Raises:
        StoreError: the node is not live (:class:`~..store.NodeNotFoundError`)
            or the store fails.
    """
    store = await get_store(services)
    record = await store.resolve(node_id)
    view = await _view(services, store, record)
    return view.model_dump_json(exclude_none=True).encode()


@router.get("/v1/nodes/{node_id}", response_model=NodeView, response_model_exclude_none=True)
async def resolve(node_id: NodeIdPath, services: ServicesDep) -> Response:
    """Resolve a live node; relay-only nodes get a beacon address."""
    return Response(await resolve_answer(services, node_id), media_type=_JSON)


@router.get("/v1/names/{name}", response_model=NodeView, response_model_exclude_none=True)
async def resolve_name(name: NodeNamePath, services: ServicesDep) -> Response:
    """Resolve the live node registered under ``name``."""
    store = await get_store(services)
    record = await store.resolve_name(name)
    return _json(await _view(services, store, record), exclude_none=True)


@router.get(
    "/v1/nodes",
    response_model=NodeListResponse,
    response_model_exclude_none=True,
    dependencies=_operator,
    tags=["operator"],
)
async def list_nodes(
    store: StoreDep,
    settings: SettingsDep,
    beacons: BeaconListDep,
    clock: ClockDep,
    limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
) -> NodeListResponse:
    """Operator: live nodes by ID (at most ``limit``), as resolve would show each."""
    records = await store.live_nodes(limit)
    relay = await _relay_addr(settings, beacons, store)
    now = clock()
    return NodeListResponse(nodes=[node_view(r, relay, now) for r in records])


@router.put(
    "/v1/nodes/{node_id}/relay_only",
    response_model=RelayOnlyResponse,
    response_model_exclude_none=True,
    dependencies=_operator,
    tags=["operator"],
)
async def force_relay_only(
    node_id: NodeIdPath, body: RelayOnlyRequest, store: StoreDep
) -> RelayOnlyResponse:
    """Operator: force ``relay_only`` on (true) or off (false), or clear the force (null)."""
    record = await store.set_relay_only_force(node_id, body.force)
    _log.info("operator_relay_only_set", extra={"node_id": node_id, "force": body.force})
    return RelayOnlyResponse(
        node_id=node_id, relay_only=record.relay_only, forced=record.relay_only_forced
    )


@router.delete("/v1/nodes/{node_id}", status_code=204, dependencies=_operator, tags=["operator"])
async def delete_node(node_id: NodeIdPath, store: StoreDep) -> Response:
    """Operator: drop a node's record (its ID stays reserved for its key)."""
    await store.delete_node(node_id)
    _log.info("operator_node_deleted", extra={"node_id": node_id})
    return Response(status_code=204)
