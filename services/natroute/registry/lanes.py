"""Fast lanes: the three frequent calls answered beneath the framework (decision D45).

A registry serving 100,000 nodes answers a heartbeat per node every 30 s
and, from the sidecars' refreshes, about as many resolves and beacon-list
reads again (registry README, "Figures"). For those three calls FastAPI's
per-request machinery (exception middleware, routing, the request object,
the endpoint's parameter solving) cost about 140 µs of CPU each, more than
the work itself. :class:`FastLanes` sits in front of FastAPI (inside the
registry's request timing and body limit, outside FastAPI's own middleware:
``app.py``): it answers the common case of each call from the same
functions the routes use, and passes everything else on, untouched, to
FastAPI:

* ``GET /v1/beacons``: the pre-encoded list;
* ``GET /v1/nodes/{node_id}``: the resolve answer;
* ``POST /v1/nodes/{node_id}/heartbeat`` with ``Content-Type:
  application/json`` and a body that parses and validates as FastAPI would
  parse and validate it (the same ``json.loads``, the same model).

Only a canonical decimal node ID within range takes a lane; a body that does
not validate, any other path, method or content type, a ``root_path`` and
any dependency override (how tests swap a collaborator) go to FastAPI, which
then answers with its usual status and message. Errors inside a lane are
answered by the app's own :class:`~natroute._service.http.ErrorRenderer`, so
every refusal has the one error body. The middleware outside this one
(request timing, the body limit) sees a lane's request like any other: the
lane sets ``scope["route"]`` to the route it answers for.
``tests/registry/test_lanes.py`` sends each kind of request both ways and
compares status, headers and body.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable, Iterable
from typing import Final

from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from natroute._service.http import ErrorRenderer
from natroute.routing.addr import MAX_NODE_ID

from .deps import Services, get_store
from .models import HeartbeatRequest
from .routes.nodes import heartbeat_answer, resolve_answer

__all__ = ["FastLanes"]

_NODES: Final = "/v1/nodes/"
_BEACONS: Final = "/v1/beacons"
_HEARTBEAT: Final = "/heartbeat"
_MAX_DIGITS: Final = len(str(MAX_NODE_ID))
_JSON: Final = b"application/json"
_CONTENT_TYPE: Final = b"content-type"


def _node_id(text: str) -> int | None:
    """The node ID in a path segment when it is canonical decimal and in range."""
    if not text.isascii() or not text.isdigit() or text[0] == "0" or len(text) > _MAX_DIGITS:
        return None
    node_id = int(text)
    return node_id if node_id <= MAX_NODE_ID else None


def _is_json(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == _CONTENT_TYPE:
            return bool(value == _JSON)
    return False


class FastLanes:
    """ASGI middleware: answer the frequent calls' common case; pass on the rest.

    Args:
        app: FastAPI's own middleware stack and router, for every other request.
        owner: the FastAPI app: its ``state.services``, its routes and its
            dependency overrides.
        errors: the app's error renderer.
        routes: the routes of the routers that declare the three calls (the
            request timing outside labels a lane's answer with its route).
    """

    def __init__(
        self, app: ASGIApp, *, owner: FastAPI, errors: ErrorRenderer, routes: Iterable[BaseRoute]
    ) -> None:
        self._app = app
        self._owner = owner
        self._errors = errors
        self._routes = {
            (route.path, method): route
            for route in routes
            if isinstance(route, APIRoute)
            for method in route.methods or ()
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("root_path") or self._owner.dependency_overrides:
            await self._app(scope, receive, send)
            return
        path: str = scope["path"]
        method: str = scope["method"]
        if method == "GET" and path == _BEACONS:
            await self._answer(scope, send, _BEACONS, self._beacons)
            return
        if path.startswith(_NODES):
            rest = path[len(_NODES) :]
            if method == "GET":
                node_id = _node_id(rest)
                if node_id is not None:
                    resolve = functools.partial(resolve_answer, node_id=node_id)
                    await self._answer(scope, send, "/v1/nodes/{node_id}", resolve)
                    return
            elif method == "POST" and rest.endswith(_HEARTBEAT) and _is_json(scope):
                node_id = _node_id(rest[: -len(_HEARTBEAT)])
                if node_id is not None:
                    await self._heartbeat(scope, receive, send, node_id)
                    return
        await self._app(scope, receive, send)

    async def _heartbeat(self, scope: Scope, receive: Receive, send: Send, node_id: int) -> None:
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left before its body arrived: nobody to answer
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        raw = b"".join(chunks)
        try:
            body = HeartbeatRequest.model_validate(json.loads(raw))
        except (ValueError, ValidationError):  # JSONDecodeError and UnicodeDecodeError too
            await self._app(scope, _replay(raw, receive), send)
            return
        beat = functools.partial(heartbeat_answer, node_id=node_id, body=body)
        await self._answer(scope, send, "/v1/nodes/{node_id}/heartbeat", beat)

    @staticmethod
    async def _beacons(services: Services) -> bytes:
        return await services.beacon_list.body(await get_store(services))

    async def _answer(
        self,
        scope: Scope,
        send: Send,
        template: str,
        produce: Callable[[Services], Awaitable[bytes]],
    ) -> None:
        scope["route"] = self._route(template, scope["method"])
        try:
            body = await produce(self._owner.state.services)
        except Exception as exc:  # every refusal and failure: the one error body
            response = self._errors.response(exc, scope["path"])
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": response.raw_headers,
                }
            )
            await send({"type": "http.response.body", "body": response.body})
            return
        headers = [(b"content-length", str(len(body)).encode()), (_CONTENT_TYPE, _JSON)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _route(self, template: str, method: str) -> APIRoute:
        return self._routes[(template, method)]  # every lane answers for a declared route


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that first hands back the body a lane already read."""
    pending = True

    async def replayed() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
