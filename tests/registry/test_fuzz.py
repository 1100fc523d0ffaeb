"""Hypothesis, over a real uvicorn on 127.0.0.1: no request — any path
parameter, JSON body, raw bytes or header — makes the registry answer 500;
every refusal has the one error body shape."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from natroute.registry.app import create_app
from natroute.registry.models import address_problem
from natroute.registry.signing import (
    ACTION_HEARTBEAT,
    ACTION_REGISTER,
    b64encode,
    public_key_bytes,
    sign,
)

from .conftest import START, TOKEN, FakeClock, make_settings, serve_app

KEY = Ed25519PrivateKey.generate()
KEY_B64 = b64encode(public_key_bytes(KEY))
OTHER = Ed25519PrivateKey.generate()
NOW = "NOW"  # replaced by the fake clock's time when the request is sent
KNOWN = "KNOWN"  # replaced by the ID of the node the test registered first

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
addrs = st.sampled_from(
    ["203.0.113.5:4000", "[2001:db8::1]:1", "10.0.0.1:0", "host:1", "1.2.3.4", "", "[::1]:65536"]
) | st.text(max_size=30)
keys = st.sampled_from([KEY_B64, b64encode(bytes(32)), "AAAA", "===="]) | st.text(max_size=50)
FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "ed25519_public_key": keys | json_values,
    "x25519_public_key": keys | st.none(),
    "endpoint": addrs | st.none(),
    "lan_addrs": st.lists(addrs, max_size=20) | json_values,
    "relay_only": st.booleans() | json_values,
    "timestamp_us": st.sampled_from([NOW, int(START * 1e6), 0, -1]) | st.integers(),
    "signature": st.sampled_from([b64encode(bytes(64)), "x"]) | json_values,
    "force": st.booleans() | st.none() | json_values,
    "beacon_id": st.integers(min_value=-1, max_value=2**33) | json_values,
    "addr": addrs,
    "surprise": json_values,
}
#: (method, path template, a valid body for it, signing action or None).
ROUTES: list[tuple[str, str, dict[str, Any] | None, str | None]] = [
    (
        "POST",
        "/v1/nodes",
        {
            "ed25519_public_key": KEY_B64,
            "x25519_public_key": None,
            "endpoint": "203.0.113.5:4000",
            "lan_addrs": ["10.0.0.5:4000"],
            "relay_only": False,
            "timestamp_us": NOW,
        },
        ACTION_REGISTER,
    ),
    (
        "POST",
        "/v1/nodes/{}/heartbeat",
        {"endpoint": None, "relay_only": True, "timestamp_us": NOW},
        ACTION_HEARTBEAT,
    ),
    ("GET", "/v1/nodes/{}", None, None),
    ("PUT", "/v1/nodes/{}/relay_only", {"force": True}, None),
    ("DELETE", "/v1/nodes/{}", None, None),
    ("POST", "/v1/beacons", {"beacon_id": 5, "addr": "203.0.113.1:9001"}, None),
    ("GET", "/v1/beacons", None, None),
    ("GET", "/healthz", None, None),
    ("GET", "/v1/{}", None, None),
]
node_ids = st.sampled_from([KNOWN, KNOWN, "0", "1"]) | st.integers(min_value=-(2**40)).map(str)
node_ids |= st.text(max_size=20)
changes = st.lists(
    st.sampled_from(sorted(FIELDS)).flatmap(
        lambda name: st.tuples(st.just(name), st.none().map(lambda _: _DROP) | FIELDS[name])
    ),
    max_size=2,
)
#: How the body is made: the route's valid body (signed right, with a foreign
#: key, or too old), the valid body with fields changed or dropped, any field
#: set, any JSON value, or raw bytes.
kinds = st.sampled_from(["valid", "valid", "foreign", "stale", "mutated", "mutated", "fields"])
kinds |= st.sampled_from(["json", "bytes"])
auth = st.sampled_from([None, f"Bearer {TOKEN}", f"Bearer {TOKEN}", "Bearer x", "Basic x"])
auth |= st.text(
    # What HTTP allows in a header value: visible ASCII, space, obs-text.
    alphabet=st.characters(min_codepoint=32, max_codepoint=126)
    | st.characters(min_codepoint=160, max_codepoint=255),
    max_size=30,
)
_DROP: object = object()


def _signed(
    body: dict[str, Any], action: str | None, node_id: str, key: Ed25519PrivateKey
) -> dict[str, Any]:
    fields = {k: v for k, v in body.items() if k != "signature"}
    if action is None:
        return fields
    extra: dict[str, Any] = {}
    if action == ACTION_HEARTBEAT and node_id.isdigit():
        extra["node_id"] = int(node_id)
    try:
        return fields | {"signature": sign(key, action, fields | extra)}
    except (TypeError, ValueError):  # not JSON-serialisable: leave it unsigned
        return fields


def _body(
    kind: str,
    route: tuple[str, str, dict[str, Any] | None, str | None],
    node_id: str,
    now: float,
    draws: tuple[list[tuple[str, Any]], dict[str, Any], Any, bytes],
) -> bytes:
    _, _, valid, action = route
    edits, field_set, any_json, raw = draws
    if kind == "bytes":
        return raw
    if kind == "json":
        return json.dumps(any_json).encode()
    body = dict(field_set) if kind == "fields" or valid is None else dict(valid)
    if kind == "mutated":
        for name, value in edits:
            if value is _DROP:
                body.pop(name, None)
            else:
                body[name] = value
    if body.get("timestamp_us") == NOW:
        stale = 120.0 if kind == "stale" else 0.0
        body["timestamp_us"] = int((now - stale) * 1e6)
    if kind != "fields":
        body = _signed(body, action, node_id, OTHER if kind == "foreign" else KEY)
    return json.dumps(body).encode()


def test_no_input_gives_500(tmp_path: Path, database_url: str | None) -> None:
    clock = FakeClock(START)
    app_settings = make_settings(tmp_path, database_url, register_burst=10**6, register_rate=1000.0)
    with (
        serve_app(create_app(app_settings, clock=clock)) as url,
        httpx.Client(base_url=url) as client,
    ):
        first = _signed(
            dict(ROUTES[0][2] or {}, timestamp_us=int(clock() * 1e6)), ACTION_REGISTER, "", KEY
        )
        known = str(client.post("/v1/nodes", json=first).json()["node_id"])

        @settings(
            max_examples=400,
            deadline=None,
            derandomize=True,  # the same examples on every run: coverage asserted below
            suppress_health_check=[HealthCheck.too_slow],
        )
        @given(
            route=st.sampled_from(ROUTES),
            node_id=node_ids,
            kind=kinds,
            draws=st.tuples(
                changes,
                st.fixed_dictionaries({}, optional=FIELDS),
                json_values,
                st.binary(max_size=200),
            ),
            authorization=auth,
            json_type=st.sampled_from([True, True, True, False]),
            tick=st.sampled_from([0.0, 0.0, 0.0, 1.0, 30.0, 100.0]),
        )
        def check(
            route: tuple[str, str, dict[str, Any] | None, str | None],
            node_id: str,
            kind: str,
            draws: tuple[list[tuple[str, Any]], dict[str, Any], Any, bytes],
            authorization: str | None,
            json_type: bool,
            tick: float,
        ) -> None:
            clock.advance(tick)
            node_id = known if node_id == KNOWN else node_id
            path = route[1].format(quote(node_id, safe=""))
            content = _body(kind, route, node_id, clock(), draws)
            headers = {"Content-Type": "application/json"} if json_type else {}
            if authorization is not None and authorization.strip(" "):
                # HTTP forbids leading/trailing blanks in a header value.
                headers["Authorization"] = authorization.strip(" ")
            raw_headers = {k.encode(): v.encode("latin-1") for k, v in headers.items()}
            verb = route[0]
            response = client.request(verb, path, content=content, headers=raw_headers)
            event(f"{verb} {response.status_code}")
            assert response.status_code < 500 or response.status_code == 503, response.text
            if response.status_code >= 400:
                error = response.json()["error"]
                assert isinstance(error["code"], str)
                assert isinstance(error["message"], str)

        check()
        metrics = client.get("/metrics").text
    assert 'code="internal"' not in metrics
    # The examples are fixed (derandomize): check that they reach the handlers.
    # (Signature, replay and clock-skew refusals are pinned down in test_api.)
    for reached in ("invalid_request", "unauthorized", "not_found"):
        assert f'natroute_registry_errors_total{{code="{reached}"}}' in metrics
    assert 'natroute_registry_registrations_total{kind="again"}' in metrics


def test_every_method_on_every_route(tmp_path: Path, database_url: str | None) -> None:
    """Exhaustive: each method on each path shape gets an answer, never a 500."""
    clock = FakeClock(START)
    with (
        serve_app(create_app(make_settings(tmp_path, database_url), clock=clock)) as url,
        httpx.Client(base_url=url) as client,
    ):
        for _, template, _, _ in ROUTES:
            for verb in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
                for node_id in ("5", "x"):
                    response = client.request(verb, template.format(node_id), json={})
                    assert response.status_code < 500, (verb, template, response.text)
                    if response.status_code == 405 and verb != "HEAD":
                        assert response.json()["error"]["code"] == "method_not_allowed"


def _acceptable(addr: str) -> bool:
    host = addr.rsplit(":", 1)[0].strip("[]")
    return address_problem(ipaddress.ip_address(host), allow_local=False) is None


def test_valid_fuzzed_registrations_resolve(tmp_path: Path, database_url: str | None) -> None:
    """Any address the policy accepts is stored and resolved as sent; any other
    address is refused with 422 naming the field (never stored)."""
    clock = FakeClock(START)
    app_settings = make_settings(tmp_path, database_url, register_burst=10**6, register_rate=1000.0)
    ip_ports = st.tuples(
        st.ip_addresses(v=4).map(str) | st.ip_addresses(v=6).map(lambda ip: f"[{ip}]"),
        st.integers(min_value=1, max_value=65535),
    ).map(lambda t: f"{t[0]}:{t[1]}")
    candidates = st.lists(
        st.tuples(ip_ports, st.sampled_from(["host", "srflx"])),
        max_size=8,
        unique_by=lambda c: c[0],
    )
    with (
        serve_app(create_app(app_settings, clock=clock)) as url,
        httpx.Client(base_url=url) as client,
    ):

        @settings(max_examples=80, deadline=None)
        @given(
            endpoint=ip_ports | st.none(),
            lan=st.lists(ip_ports, max_size=16),
            cands=candidates,
            xkey=st.binary(min_size=32, max_size=32) | st.none(),
        )
        def check(
            endpoint: str | None, lan: list[str], cands: list[tuple[str, str]], xkey: bytes | None
        ) -> None:
            clock.advance(1)
            fields: dict[str, Any] = {
                "ed25519_public_key": KEY_B64,
                "x25519_public_key": None if xkey is None else b64encode(xkey),
                "endpoint": endpoint,
                "lan_addrs": lan,
                "candidates": [{"addr": a, "kind": k} for a, k in cands],
                "relay_only": False,
                "timestamp_us": int(clock() * 1e6),
            }
            body = fields | {"signature": sign(KEY, ACTION_REGISTER, fields)}
            registered = client.post("/v1/nodes", json=body)
            addrs = ([] if endpoint is None else [endpoint]) + lan + [a for a, _ in cands]
            if not all(_acceptable(a) for a in addrs):
                event("refused address")
                assert registered.status_code == 422, registered.text
                message = registered.json()["error"]["message"]
                assert any(f in message for f in ("endpoint", "lan_addrs", "candidates"))
                return
            event("accepted")
            assert registered.status_code == 200, registered.text
            view = client.get(f"/v1/nodes/{registered.json()['node_id']}").json()
            assert view.get("endpoint") == endpoint
            assert view["lan_addrs"] == lan
            assert view["candidates"] == fields["candidates"]
            assert view.get("x25519_public_key") == fields["x25519_public_key"]

        check()
