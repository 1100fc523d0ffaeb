"""The sidecar's admin HTTP API (FastAPI, JSON, OpenAPI at ``/openapi.json``).

Endpoints (issue 5, "Admin API"):

* ``GET /v1/status``: node, NAT, beacon pick and why, counters, uptime
  (``?peers=true`` adds the peer list);
* ``GET /v1/peers``, ``GET /v1/peers/{id}``: path, reason, flags, counters and
  recent path events (404 for an unknown peer);
* ``PUT /v1/peers/{id}/relay`` with ``{"relay": bool, "pinned": bool}``;
  ``DELETE /v1/peers/{id}`` (204); ``POST /v1/peers/{id}/punch`` (202);
* ``GET /v1/beacons``: list, pick, reason, RTT measurements, source, cache age;
  ``POST /v1/beacons/refresh``: one refresh tick now (docs/protocol.md, "Refresh tick");
* ``GET /healthz`` (the process answers), ``GET /readyz`` (503 until ready),
  ``GET /metrics`` (Prometheus text, bounded labels, see ``metrics.py``),
  ``GET /`` (a self-contained HTML page: status and peer table).

Peer IDs in paths are decimal or ``0x`` hex node IDs (1..2^32-1).

Security model: the API binds 127.0.0.1 by default (``http_listen``), so
reads are open to whoever can reach it. Every mutation (PUT, DELETE, POST)
needs ``Authorization: Bearer <NATROUTE_SIDECAR_ADMIN_TOKEN>`` (compared in
constant time; 401 without it or with a wrong one); with no token configured
mutations are refused (403) rather than open. Bind the API elsewhere only behind a network policy.

The app only reads :mod:`.status` snapshots and calls the sidecar's operator
entry points (``engine.set_relay``, ``engine.remove_peer``, ``engine.punch``,
``engine.ping``, ``sidecar.refresh_now``). Every handler is ``async``, so it
runs on the event-loop thread that owns the engine. OpenAPI is at
``/openapi.json``, with Swagger UI at ``/docs`` and ReDoc at ``/redoc`` from
local assets. Domain and HTTP errors are mapped to
status codes in one place (the shared handlers of :mod:`natroute._service.http`);
every non-2xx answer has the body ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import FastAPI, Response, Security
from fastapi.responses import HTMLResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from natroute._service.docs import mount_offline_docs
from natroute._service.http import ApiError, ErrorBody, install_error_handlers
from natroute.registry.client import RegistryClientError
from natroute.registry.models import NAME_PATTERN
from natroute.routing.addr import MAX_NODE_ID, format_addr
from natroute.routing.errors import RoutingError

from .engine import Engine
from .metrics import CONTENT_TYPE_LATEST, SidecarMetrics
from .page import render_page
from .peers import Peer
from .service import Sidecar
from .status import (
    BeaconStatus,
    PeerStatus,
    RefreshResult,
    SidecarStatus,
    build_peer,
    build_peers,
    build_refresh_result,
    build_status,
    read_cache_age,
)

__all__ = [
    "AdminError",
    "AuthInvalidError",
    "AuthRequiredError",
    "InvalidPeerIdError",
    "MutationsDisabledError",
    "NotReadyError",
    "PeerNotFoundError",
    "PingRequest",
    "PingResponse",
    "PingResult",
    "RelayRequest",
    "create_app",
    "parse_peer_id",
]

_log = logging.getLogger(__name__)
_TOKEN_ENV = "NATROUTE_SIDECAR_ADMIN_TOKEN"


class AdminError(ApiError):
    """A refusal of the admin API, with its status and snake_case code."""

    status_code: int = 400
    error_code: str = "bad_request"

    def __init__(self, message: str) -> None:
        headers = {"WWW-Authenticate": "Bearer"} if self.status_code == 401 else None
        super().__init__(self.status_code, self.error_code, message, headers)


class InvalidPeerIdError(AdminError):
    """The path's peer ID is neither a node ID nor a node name."""

    status_code, error_code = 400, "invalid_peer_id"


class PeerNotFoundError(AdminError):
    """No peer with that node ID (or no node with that name)."""

    status_code, error_code = 404, "peer_not_found"


class AuthRequiredError(AdminError):
    """A mutation without a bearer token."""

    status_code, error_code = 401, "auth_required"


class AuthInvalidError(AdminError):
    """A mutation with the wrong bearer token."""

    status_code, error_code = 401, "auth_invalid"


class MutationsDisabledError(AdminError):
    """No admin token is configured, so mutations are off."""

    status_code, error_code = 403, "mutations_disabled"


class NotReadyError(AdminError):
    """The sidecar has not finished start-up."""

    status_code, error_code = 503, "not_ready"


#: Domain errors of the core that reach a handler, and what they become
#: (admin refusals carry their own status; the shared handlers do the rest).
_ERROR_STATUS: dict[type[Exception], tuple[int, str]] = {RoutingError: (400, "routing_error")}


class PingRequest(BaseModel):
    """``POST /v1/peers/{id}/ping``: how many rounds and how long to wait for each."""

    model_config = ConfigDict(extra="forbid")

    count: int = Field(3, ge=1, le=20)
    timeout: float = Field(1.0, gt=0, le=10)


class PingResult(BaseModel):
    """One probe of a ping round: the path it took and its round trip (None: no answer)."""

    seq: int
    path: str
    via: str | None
    rtt_ms: float | None


class PingResponse(BaseModel):
    """The peer, its current path, and every probe's answer."""

    node_id: int
    name: str
    path: str
    results: list[PingResult]


class RelayRequest(BaseModel):
    """``PUT /v1/peers/{id}/relay``: force relay (optionally pinned) or back to direct."""

    model_config = ConfigDict(extra="forbid", strict=True)

    relay: bool
    pinned: bool = False


_NAME = re.compile(NAME_PATTERN)


def parse_peer_id(text: str) -> int:
    """A node ID from a path segment: decimal or ``0x`` hex, 1..2^32-1.

    Raises:
        InvalidPeerIdError: anything else.
    """
    raw = text.strip()
    try:
        value = int(raw, 16) if raw[:2].lower() == "0x" else int(raw, 10)
    except ValueError:
        raise InvalidPeerIdError(
            f"peer ID {text[:40]!r} is not a node ID (decimal or 0x hex) or a node name"
        ) from None
    if not 1 <= value <= MAX_NODE_ID:
        raise InvalidPeerIdError(f"peer ID {value} is out of range 1..{MAX_NODE_ID}")
    return value


async def peer_node_id(sidecar: Sidecar, text: str) -> int:
    """A node ID from a path segment: a node ID, or a node name (a known peer's, else
    the registry's answer for it).

    Raises:
        InvalidPeerIdError: neither a node ID nor a valid name.
        PeerNotFoundError: no node has that name.
    """
    raw = text.strip()
    if raw[:1].isdigit():
        return parse_peer_id(raw)
    if not _NAME.match(raw):
        raise InvalidPeerIdError(
            f"peer ID {text[:40]!r} is not a node ID (decimal or 0x hex) or a node name"
        )
    for peer in sidecar.engine.peers.values():
        if peer.name == raw:
            return peer.node_id
    try:
        resolved = await sidecar.registry.client.resolve_name(raw)
    except RegistryClientError as exc:
        raise PeerNotFoundError(f"no node named {raw!r} ({exc})") from exc
    return resolved.node_id


def _require_token(sidecar: Sidecar) -> Callable[..., Awaitable[None]]:
    """The dependency guarding every mutation (see the module docstring)."""

    async def check(
        credentials: Annotated[
            HTTPAuthorizationCredentials | None, Security(HTTPBearer(auto_error=False))
        ],
    ) -> None:
        token = sidecar.settings.admin_token.get_secret_value()
        if not token:
            raise MutationsDisabledError(
                f"mutations are disabled: set {_TOKEN_ENV} (or --admin-token) to enable them"
            )
        if credentials is None:
            raise AuthRequiredError("this mutation needs 'Authorization: Bearer <admin token>'")
        if not secrets.compare_digest(credentials.credentials.encode(), token.encode()):
            raise AuthInvalidError("the bearer token does not match the admin token")

    return check


def _engine(sidecar: Sidecar) -> Engine:
    if sidecar.engine.node_id is None:
        raise NotReadyError("the sidecar is still starting (no node ID yet)")
    return sidecar.engine


async def _full_status(sidecar: Sidecar, *, include_peers: bool) -> SidecarStatus:
    cache = await asyncio.to_thread(read_cache_age, sidecar.settings.identity, sidecar.wall_clock())
    return build_status(sidecar, cache=cache, include_peers=include_peers)


def _peer(sidecar: Sidecar, peer_id: int) -> PeerStatus:
    peer = build_peer(sidecar, peer_id)
    if peer is None:
        raise PeerNotFoundError(f"no peer with node ID {peer_id}")
    return peer


async def _until(done: Callable[[], bool], limit: float) -> None:
    """Wait until ``done()`` or ``limit`` seconds; the engine has no events to await,
    so its state is polled every 5 ms (only for an operator's request)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(limit):
            while not done():  # noqa: ASYNC110
                await asyncio.sleep(0.005)


async def _ping(sidecar: Sidecar, node_id: int, request: PingRequest) -> list[PingResult]:
    """``count`` rounds of probes over the direct path (if any) and the relay."""
    engine = sidecar.engine
    results: list[PingResult] = []
    for seq in range(request.count):
        peer = engine.peers.get(node_id)
        if peer is None:
            break
        via = {
            "direct": format_addr(peer.chosen) if peer.chosen else None,
            "relay": format_addr(b) if (b := sidecar.manager.beacon_addr()) else None,
        }
        sent = engine.ping(node_id, sidecar.clock())
        sidecar.flush()
        nonces = frozenset(nonce for nonce, _ in sent)

        def answers(p: Peer = peer, wanted: frozenset[int] = nonces) -> dict[int, float]:
            return {n: rtt for n, _, rtt in p.ping_results if n in wanted}

        def complete(wanted: frozenset[int] = nonces) -> bool:
            return len(answers()) == len(wanted)

        await _until(complete, request.timeout)
        got = answers()
        for nonce, path in sent:
            rtt = got.get(nonce)
            results.append(
                PingResult(
                    seq=seq,
                    path=path,
                    via=via[path],
                    rtt_ms=None if rtt is None else round(rtt * 1000.0, 3),
                )
            )
        if seq + 1 < request.count:
            await asyncio.sleep(0.2)
    return results


def create_app(sidecar: Sidecar) -> FastAPI:
    """Build the admin app of one sidecar.

    Args:
        sidecar: the running (or starting) sidecar; only its snapshots and
            operator entry points are used.

    Returns:
        The FastAPI app (served by ``main.py`` on ``settings.http_listen``).
    """
    app = FastAPI(
        title="natroute sidecar admin",
        summary="Relay state, beacon picks and counters of one natroute node",
        docs_url=None,  # served from local assets below (no CDN)
        redoc_url=None,
        responses={400: {"model": ErrorBody}},
    )
    install_error_handlers(app, codes=_ERROR_STATUS, log_event="admin_request_failed")
    mount_offline_docs(app)
    metrics = SidecarMetrics()
    auth = _require_token(sidecar)
    errors: dict[int | str, dict[str, Any]] = {
        code: {"model": ErrorBody} for code in (401, 403, 404, 503)
    }

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", responses={503: {"model": ErrorBody}})
    async def readyz() -> dict[str, str]:
        if not sidecar.ready:
            raise NotReadyError("the sidecar is not ready")
        return {"status": "ready"}

    @app.get("/metrics", response_class=Response)
    async def metrics_text() -> Response:
        status = await _full_status(sidecar, include_peers=False)  # it reads the counts only
        return Response(metrics.render(status), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/status", response_model=SidecarStatus)
    async def status(peers: bool = False) -> SidecarStatus:
        return await _full_status(sidecar, include_peers=peers)

    @app.get("/v1/peers", response_model=list[PeerStatus])
    async def peers() -> list[PeerStatus]:
        return list(build_peers(sidecar))

    @app.get("/v1/peers/{peer_id}", response_model=PeerStatus, responses=errors)
    async def peer(peer_id: str) -> PeerStatus:
        return _peer(sidecar, await peer_node_id(sidecar, peer_id))

    @app.put(
        "/v1/peers/{peer_id}/relay",
        response_model=PeerStatus,
        responses=errors,
        dependencies=[Security(auth)],
    )
    async def set_relay(peer_id: str, body: RelayRequest) -> PeerStatus:
        node_id = await peer_node_id(sidecar, peer_id)
        done = _engine(sidecar).set_relay(node_id, body.relay, body.pinned, sidecar.clock())
        sidecar.flush()
        if not done:
            raise PeerNotFoundError(f"no peer with node ID {node_id}")
        _log.info(
            "operator_set_relay",
            extra={"peer": node_id, "relay": body.relay, "pinned": body.pinned},
        )
        return _peer(sidecar, node_id)

    @app.delete(
        "/v1/peers/{peer_id}", status_code=204, responses=errors, dependencies=[Security(auth)]
    )
    async def remove_peer(peer_id: str) -> Response:
        node_id = await peer_node_id(sidecar, peer_id)
        if not _engine(sidecar).remove_peer(node_id):
            raise PeerNotFoundError(f"no peer with node ID {node_id}")
        _log.info("operator_removed_peer", extra={"peer": node_id})
        return Response(status_code=204)

    @app.post(
        "/v1/peers/{peer_id}/punch",
        status_code=202,
        response_model=PeerStatus,
        responses=errors,
        dependencies=[Security(auth)],
    )
    async def punch(peer_id: str) -> PeerStatus:
        node_id = await peer_node_id(sidecar, peer_id)
        done = _engine(sidecar).punch(node_id, sidecar.clock())
        sidecar.flush()
        if not done:
            raise PeerNotFoundError(f"no peer with node ID {node_id}")
        _log.info("operator_punch", extra={"peer": node_id})
        return _peer(sidecar, node_id)

    @app.post(
        "/v1/peers/{peer_id}/ping",
        response_model=PingResponse,
        responses=errors,
        dependencies=[Security(auth)],
    )
    async def ping(peer_id: str, body: PingRequest | None = None) -> PingResponse:
        node_id = await peer_node_id(sidecar, peer_id)
        request = body or PingRequest()
        engine = _engine(sidecar)
        if engine.peers.get(node_id) is None:
            # not a peer yet: look it up (as a first datagram would) and wait a little
            engine.look_up(node_id, sidecar.clock())
            sidecar.flush()
            await _until(lambda: engine.peers.get(node_id) is not None, 3.0)
            if engine.peers.get(node_id) is None:
                raise PeerNotFoundError(f"no node with node ID {node_id} (registry look-up)")
        results = await _ping(sidecar, node_id, request)
        peer = _peer(sidecar, node_id)
        return PingResponse(node_id=node_id, name=peer.name, path=peer.path, results=results)

    @app.get("/v1/beacons", response_model=BeaconStatus)
    async def beacons() -> BeaconStatus:
        return (await _full_status(sidecar, include_peers=False)).beacon

    @app.post(
        "/v1/beacons/refresh",
        response_model=RefreshResult,
        responses=errors,
        dependencies=[Security(auth)],
    )
    async def refresh() -> RefreshResult:
        outcome = await sidecar.refresh_now()
        _log.info("operator_refresh", extra={"source": outcome.source.value})
        return build_refresh_result(sidecar, outcome)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(render_page(await _full_status(sidecar, include_peers=True)))

    return app
