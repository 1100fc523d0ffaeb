"""The fast lanes: which requests take them, and that they answer exactly as FastAPI does.

Each request is sent twice, once with the lanes (the app as it serves) and
once through FastAPI's own handlers (any dependency override sends every
request there), and the two answers must agree in status, the headers a
client reads, and body bytes. The heartbeat's cases are in
``test_heartbeat.py``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from starlette.types import Message, Receive, Scope, Send

from natroute._service.http import ErrorRenderer
from natroute.registry.app import ERROR_CODES
from natroute.registry.deps import get_clock
from natroute.registry.lanes import FastLanes
from natroute.registry.routes import beacons_router, nodes_router
from natroute.registry.store import Store

from .conftest import SQLITE_ONLY, TOKEN, FakeClock
from .test_api import register_body
from .test_heartbeat import heartbeat_body

pytestmark = pytest.mark.asyncio

_JSON = "application/json"
_READ_HEADERS = ("content-type", "content-length", "retry-after")

Send_ = Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]


Answer = tuple[int, dict[str, str | None], bytes]


async def _both_ways(app: FastAPI, http: httpx.AsyncClient, send: Send_) -> Answer:
    answers: list[Answer] = []
    for standard in (False, True):
        if standard:
            app.dependency_overrides[get_clock] = get_clock  # any override: FastAPI's handlers
        try:
            answer = await send(http)
        finally:
            app.dependency_overrides.clear()
        headers = {name: answer.headers.get(name) for name in _READ_HEADERS}
        answers.append((answer.status_code, headers, answer.content))
    assert answers[0] == answers[1]
    return answers[0]


async def _register(
    http: httpx.AsyncClient, key: Ed25519PrivateKey, clock: FakeClock, **f: object
) -> int:
    answer = await http.post("/v1/nodes", json=register_body(key, clock, **f))
    assert answer.status_code == 200, answer.text
    return int(answer.json()["node_id"])


async def test_resolve_answers_as_fastapi_would(
    app: FastAPI, http: httpx.AsyncClient, clock: FakeClock, key: Ed25519PrivateKey
) -> None:
    node_id = await _register(http, key, clock, lan_addrs=["10.0.0.5:4000"], name="alpha")
    relayed = await _register(http, Ed25519PrivateKey.generate(), clock, relay_only=True)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    await http.post("/v1/beacons", json={"beacon_id": 3, "addr": "203.0.113.3:9001"}, headers=auth)
    for path, status in (
        (f"/v1/nodes/{node_id}", 200),
        (f"/v1/nodes/{relayed}", 200),  # relay-only: the beacon's address
        (f"/v1/nodes/{node_id + 1}", 404),  # never registered
        (f"/v1/nodes/0{node_id}", 200),  # not canonical: FastAPI's own (it accepts it)
        ("/v1/nodes/0", 422),
        ("/v1/nodes/4294967296", 422),
        ("/v1/nodes/-1", 422),
        ("/v1/nodes/1e3", 422),
        ("/v1/nodes/٣", 422),  # a digit, but not ASCII
    ):
        answer = await _both_ways(app, http, lambda h, p=path: h.get(p))  # type: ignore[misc]
        assert answer[0] == status, (path, answer)
    clock.advance(10_000)  # both expired
    answer = await _both_ways(app, http, lambda h: h.get(f"/v1/nodes/{node_id}"))
    assert answer[0] == 404


async def test_beacon_list_answers_as_fastapi_would(
    app: FastAPI, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    empty = await _both_ways(app, http, lambda h: h.get("/v1/beacons"))
    assert empty[0] == 200
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for beacon_id in (2, 1):
        body = {"beacon_id": beacon_id, "addr": f"203.0.113.{beacon_id}:9001"}
        assert (await http.post("/v1/beacons", json=body, headers=auth)).status_code == 200
    listed = await _both_ways(app, http, lambda h: h.get("/v1/beacons?x=1"))
    assert listed[0] == 200
    assert b"203.0.113.1:9001" in listed[2]


async def test_a_store_that_is_not_open_yet_gets_the_same_refusal(
    app: FastAPI, http: httpx.AsyncClient, store: Store, key: Ed25519PrivateKey, clock: FakeClock
) -> None:
    node_id = await _register(http, key, clock)
    app.state.services.store = None  # as before the lifespan opened it
    try:
        for send in (
            lambda h: h.get("/v1/beacons"),
            lambda h: h.get(f"/v1/nodes/{node_id}"),
            lambda h: h.post(
                f"/v1/nodes/{node_id}/heartbeat", json=heartbeat_body(key, node_id, clock)
            ),
        ):
            status, headers, _ = await _both_ways(app, http, send)
            assert (status, headers["retry-after"]) == (503, "1")
    finally:
        app.state.services.store = store


async def test_lane_answers_are_timed_under_their_route(
    app: FastAPI, http: httpx.AsyncClient, clock: FakeClock, key: Ed25519PrivateKey
) -> None:
    node_id = await _register(http, key, clock)
    await http.get(f"/v1/nodes/{node_id}")
    await http.get(f"/v1/nodes/{node_id + 1}")
    await http.get("/v1/beacons")
    clock.advance(1)
    await http.post(f"/v1/nodes/{node_id}/heartbeat", json=heartbeat_body(key, node_id, clock))
    metrics = (await http.get("/metrics")).text
    for route, status in (
        ("/v1/nodes/{node_id}", "200"),
        ("/v1/nodes/{node_id}", "404"),
        ("/v1/beacons", "200"),
        ("/v1/nodes/{node_id}/heartbeat", "200"),
    ):
        label = f'route="{route}",status="{status}"'
        assert any(label in line and line.endswith(" 1.0") for line in metrics.splitlines()), label


Case = Callable[[Ed25519PrivateKey, int, FakeClock], tuple[str, bytes, str | None]]


def _as_json(body: Any) -> bytes:
    return json.dumps(body).encode()


# Each case builds a fresh request (path, body, Content-Type) for a registered node.
CASES: dict[str, Case] = {
    "valid": lambda k, n, c: (f"/v1/nodes/{n}/heartbeat", _as_json(heartbeat_body(k, n, c)), _JSON),
    "valid, with charset": lambda k, n, c: (
        f"/v1/nodes/{n}/heartbeat",
        _as_json(heartbeat_body(k, n, c, endpoint="198.51.100.7:4000")),
        "application/json; charset=utf-8",
    ),
    "text/plain": lambda k, n, c: (
        f"/v1/nodes/{n}/heartbeat",
        _as_json(heartbeat_body(k, n, c)),
        "text/plain",
    ),
    "no content type": lambda k, n, c: (
        f"/v1/nodes/{n}/heartbeat",
        _as_json(heartbeat_body(k, n, c)),
        None,
    ),
    "malformed JSON": lambda k, n, c: (f"/v1/nodes/{n}/heartbeat", b'{"timestamp_us": 1', _JSON),
    "not UTF-8": lambda k, n, c: (f"/v1/nodes/{n}/heartbeat", b'{"a": "\xff"}', _JSON),
    "a list": lambda k, n, c: (f"/v1/nodes/{n}/heartbeat", b"[1, 2]", _JSON),
    "empty body": lambda k, n, c: (f"/v1/nodes/{n}/heartbeat", b"", _JSON),
    "unknown field": lambda k, n, c: (
        f"/v1/nodes/{n}/heartbeat",
        _as_json(heartbeat_body(k, n, c) | {"name": "x"}),
        _JSON,
    ),
    "timestamp as text": lambda k, n, c: (
        f"/v1/nodes/{n}/heartbeat",
        _as_json(heartbeat_body(k, n, c) | {"timestamp_us": str(int(c() * 1e6))}),
        _JSON,
    ),
    "bad endpoint": lambda k, n, c: (
        f"/v1/nodes/{n}/heartbeat",
        _as_json(heartbeat_body(k, n, c, endpoint="224.0.0.1:5")),
        _JSON,
    ),
    "another key's signature": lambda k, n, c: (
        f"/v1/nodes/{n}/heartbeat",
        _as_json(heartbeat_body(Ed25519PrivateKey.generate(), n, c)),
        _JSON,
    ),
    "signed for another ID": lambda k, n, c: (
        f"/v1/nodes/{n}/heartbeat",
        _as_json(heartbeat_body(k, n + 1, c)),
        _JSON,
    ),
    "older timestamp": lambda k, n, c: (
        f"/v1/nodes/{n}/heartbeat",
        _as_json(heartbeat_body(k, n, FakeClock(c() - 30))),
        _JSON,
    ),
    "unknown node": lambda k, n, c: (
        f"/v1/nodes/{n + 1}/heartbeat",
        _as_json(heartbeat_body(k, n + 1, c)),
        _JSON,
    ),
    "leading zero": lambda k, n, c: (f"/v1/nodes/0{n}/heartbeat", _as_json({}), _JSON),
    "node 0": lambda k, n, c: ("/v1/nodes/0/heartbeat", _as_json(heartbeat_body(k, 0, c)), _JSON),
    "beyond 32 bits": lambda k, n, c: (
        "/v1/nodes/4294967296/heartbeat",
        _as_json(heartbeat_body(k, 2**32, c)),
        _JSON,
    ),
    "not a number": lambda k, n, c: ("/v1/nodes/abc/heartbeat", _as_json({}), _JSON),
}


@SQLITE_ONLY
@pytest.mark.parametrize("case", CASES)
async def test_heartbeat_answers_as_fastapi_would(
    app: FastAPI, http: httpx.AsyncClient, clock: FakeClock, key: Ed25519PrivateKey, case: str
) -> None:
    node_id = await _register(http, key, clock)

    async def send(h: httpx.AsyncClient) -> httpx.Response:
        clock.advance(1)  # a fresh timestamp for each of the two
        path, content, content_type = CASES[case](key, node_id, clock)
        headers = {} if content_type is None else {"Content-Type": content_type}
        return await h.post(path, content=content, headers=headers)

    status, _, body = await _both_ways(app, http, send)
    if case.startswith("valid"):
        assert (status, json.loads(body)) == (
            200,
            {"node_id": node_id, "relay_only": False, "ttl": 90},
        )
    else:
        assert status >= 400


# -- which requests take a lane ----------------------------------------------------


class _Rest:
    """The app behind the lanes, reduced to noting what reached it."""

    def __init__(self) -> None:
        self.reached: list[tuple[str, str, bytes]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        self.reached.append((scope["method"], scope["path"], message.get("body", b"")))
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b""})


async def _dispatch(
    app: FastAPI, method: str, path: str, body: bytes = b"", content_type: bytes | None = None
) -> tuple[int, bool]:
    """Send one request to lanes in front of :class:`_Rest`: its status and whether it passed."""
    rest = _Rest()
    lanes = FastLanes(
        rest,
        owner=app,
        errors=ErrorRenderer(ERROR_CODES),
        routes=[*beacons_router.routes, *nodes_router.routes],
    )
    headers = [] if content_type is None else [(b"content-type", content_type)]
    scope: Scope = {"type": "http", "method": method, "path": path, "headers": headers}
    sent: list[Message] = []
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> Message:
        return pending.pop() if pending else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await lanes(scope, receive, send)
    if rest.reached:
        assert rest.reached == [(method, path, body)]  # the body reaches it whole, once
    return int(sent[0]["status"]), bool(rest.reached)


async def test_only_the_common_case_takes_a_lane(
    app: FastAPI, http: httpx.AsyncClient, clock: FakeClock, key: Ed25519PrivateKey
) -> None:
    node_id = await _register(http, key, clock)
    clock.advance(1)
    beat = httpx.Request("POST", "/", json=heartbeat_body(key, node_id, clock)).content
    json_type = b"application/json"
    taken = [
        ("GET", "/v1/beacons", b"", None),
        ("GET", f"/v1/nodes/{node_id}", b"", None),
        ("GET", "/v1/nodes/4294967295", b"", None),  # in range: the store says 404
        ("POST", f"/v1/nodes/{node_id}/heartbeat", beat, json_type),
    ]
    passed = [
        ("POST", "/v1/beacons", b"{}", json_type),
        ("HEAD", "/v1/beacons", b"", None),
        ("GET", "/v1/beacons/", b"", None),
        ("GET", f"/v1/nodes/0{node_id}", b"", None),
        ("GET", "/v1/nodes/4294967296", b"", None),
        ("GET", "/v1/nodes/x", b"", None),
        ("GET", "/v1/nodes", b"", None),
        ("DELETE", f"/v1/nodes/{node_id}", b"", None),
        ("GET", f"/v1/nodes/{node_id}/heartbeat", b"", None),
        ("POST", f"/v1/nodes/{node_id}/heartbeat", beat, None),
        ("POST", f"/v1/nodes/{node_id}/heartbeat", beat, b"application/json; charset=utf-8"),
        ("POST", f"/v1/nodes/{node_id}/heartbeat", beat, b"text/plain"),
        ("POST", f"/v1/nodes/{node_id}/heartbeat", b"{", json_type),
        ("POST", f"/v1/nodes/{node_id}/heartbeat", b"[]", json_type),
        ("POST", f"/v1/nodes/{node_id}/heartbeat", b'{"timestamp_us": "1"}', json_type),
        ("POST", f"/v1/nodes/0{node_id}/heartbeat", beat, json_type),
        ("POST", "/v1/nodes//heartbeat", beat, json_type),
        ("GET", "/metrics", b"", None),
    ]
    for method, path, body, content_type in taken:
        status, reached = await _dispatch(app, method, path, body, content_type)
        assert not reached, (method, path)
        assert status != 299
    for method, path, body, content_type in passed:
        status, reached = await _dispatch(app, method, path, body, content_type)
        assert reached, (method, path, body, content_type)
        assert status == 299
    app.dependency_overrides[get_clock] = get_clock
    try:
        assert (await _dispatch(app, "GET", "/v1/beacons"))[1]
    finally:
        app.dependency_overrides.clear()
