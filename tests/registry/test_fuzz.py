"""Hypothesis, over a real uvicorn on 127.0.0.1: no request — any path
parameter, JSON body, raw bytes or header — makes the registry answer 500;
every refusal has the one error body shape."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from natroute.registry.signing import (
    ACTION_HEARTBEAT,
    ACTION_REGISTER,
    b64encode,
    public_key_bytes,
    sign,
)

from .conftest import START, TOKEN, FakeClock, app_for, make_settings, serve_app

KEY = Ed25519PrivateKey.generate()
KEY_B64 = b64encode(public_key_bytes(KEY))

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
timestamps = st.sampled_from(["NOW", "NOW", int(START * 1e6), 0, -1]) | st.integers()
FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "ed25519_public_key": keys | json_values,
    "x25519_public_key": keys | st.none(),
    "endpoint": addrs | st.none(),
    "lan_addrs": st.lists(addrs, max_size=20) | json_values,
    "relay_only": st.booleans() | json_values,
    "timestamp_us": timestamps,
    "signature": st.sampled_from([b64encode(bytes(64)), "x"]) | json_values,
    "force": st.booleans() | st.none() | json_values,
    "beacon_id": st.integers(min_value=-1, max_value=2**33) | json_values,
    "addr": addrs,
}
VALID_BODIES: list[dict[str, Any]] = [
    {
        "ed25519_public_key": KEY_B64,
        "x25519_public_key": None,
        "endpoint": "203.0.113.5:4000",
        "lan_addrs": ["10.0.0.5:4000"],
        "relay_only": False,
        "timestamp_us": "NOW",
    },
    {"endpoint": None, "relay_only": True, "timestamp_us": "NOW"},
    {"beacon_id": 5, "addr": "203.0.113.1:9001"},
    {"force": True},
]
_DROP = object()


def _mutate(base: dict[str, Any], changes: list[tuple[str, Any]]) -> dict[str, Any]:
    body = dict(base)
    for name, value in changes:
        if value is _DROP:
            body.pop(name, None)
        else:
            body[name] = value
    return body


#: Bodies: fully random field sets, or a valid body with up to two fields
#: replaced or dropped (so fuzzing gets past validation into the handlers).
node_fields = st.fixed_dictionaries({}, optional=FIELDS) | st.builds(
    _mutate,
    st.sampled_from(VALID_BODIES),
    st.lists(
        st.sampled_from(sorted(FIELDS)).flatmap(
            lambda name: st.tuples(st.just(name), st.just(_DROP) | FIELDS[name])
        ),
        max_size=2,
    ),
)
#: Filled in once the test has registered KEY (so fuzzing reaches live nodes).
KNOWN_IDS: list[int] = []
node_ids = (
    st.integers(min_value=0, max_value=3).map(lambda i: str(KNOWN_IDS[0] + i) if KNOWN_IDS else "1")
    | st.integers(min_value=-(2**40), max_value=2**40).map(str)
    | st.text(max_size=20)
)
ROUTES = [
    ("POST", "/v1/nodes"),
    ("POST", "/v1/nodes/{}/heartbeat"),
    ("GET", "/v1/nodes/{}"),
    ("PUT", "/v1/nodes/{}/relay_only"),
    ("DELETE", "/v1/nodes/{}"),
    ("POST", "/v1/beacons"),
    ("GET", "/v1/beacons"),
    ("GET", "/healthz"),
    ("GET", "/v1/{}"),
]
requests = st.tuples(
    st.sampled_from(ROUTES)
    | st.tuples(
        st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]), st.sampled_from(ROUTES)
    ).map(lambda t: (t[0], t[1][1])),
    node_ids,
).map(lambda t: (t[0][0], t[0][1].format(quote(t[1], safe=""))))
auth = st.sampled_from(
    [None, f"Bearer {TOKEN}", f"Bearer {TOKEN}", "Bearer x", "Basic x"]
) | st.text(
    # What HTTP allows in a header value: visible ASCII, space, obs-text.
    alphabet=st.characters(min_codepoint=32, max_codepoint=126)
    | st.characters(min_codepoint=160, max_codepoint=255),
    max_size=30,
)


def _prepare(path: str, body: dict[str, Any], how: str, now: float) -> dict[str, Any]:
    """Fill in a fresh timestamp; sometimes sign properly (as KEY) so fuzzing
    reaches past the signature check into the store."""
    if body.get("timestamp_us") == "NOW":
        body = body | {"timestamp_us": int(now * 1e6)}
    if how == "raw":
        return body
    fields = {k: v for k, v in body.items() if k != "signature"}
    if how == "own_key" and "ed25519_public_key" in fields:
        fields["ed25519_public_key"] = KEY_B64
    if path.endswith("/heartbeat"):
        node = path.split("/")[3]
        extra: dict[str, Any] = {"node_id": int(node)} if node.isdigit() else {}
        return fields | {"signature": sign(KEY, ACTION_HEARTBEAT, fields | extra)}
    return fields | {"signature": sign(KEY, ACTION_REGISTER, fields)}


def test_no_input_gives_500(tmp_path: Path) -> None:
    clock = FakeClock()
    app_settings = make_settings(tmp_path, register_burst=10**6, register_rate=1000.0)
    with (
        app_for(app_settings, clock) as app,
        serve_app(app) as url,
        httpx.Client(base_url=url) as client,
    ):
        fields: dict[str, Any] = {"ed25519_public_key": KEY_B64, "timestamp_us": "NOW"}
        seed = client.post("/v1/nodes", json=_prepare("/v1/nodes", fields, "sign", clock()))
        KNOWN_IDS[:] = [seed.json()["node_id"]]

        @settings(
            max_examples=400,
            deadline=None,
            derandomize=True,  # the same examples on every run: coverage asserted below
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        )
        @given(
            request=requests,
            body=st.one_of(
                st.tuples(node_fields, st.sampled_from(["raw", "sign", "own_key", "own_key"])),
                json_values.map(lambda v: (v, "raw")),
                st.binary(max_size=200).map(lambda v: (v, "raw")),
            ),
            authorization=auth,
            json_type=st.sampled_from([True, True, True, False]),
            tick=st.sampled_from([0.0, 0.0, 1.0, 30.0, 100.0]),
        )
        def check(
            request: tuple[str, str],
            body: tuple[Any, str],
            authorization: str | None,
            json_type: bool,
            tick: float,
        ) -> None:
            clock.advance(tick)
            method, path = request
            value, how = body
            headers = {"Content-Type": "application/json"} if json_type else {}
            if authorization is not None and authorization.strip(" "):
                # HTTP forbids leading/trailing blanks in a header value.
                headers["Authorization"] = authorization.strip(" ")
            if isinstance(value, bytes):
                content = value
            else:
                if isinstance(value, dict):
                    value = _prepare(path, value, how, clock())
                content = json.dumps(value).encode()
            raw_headers = {k.encode(): v.encode("latin-1") for k, v in headers.items()}
            response = client.request(method, path, content=content, headers=raw_headers)
            event(f"{method} {response.status_code}")
            assert response.status_code < 500 or response.status_code == 503, response.text
            if response.status_code >= 400:
                error = response.json()["error"]
                assert isinstance(error["code"], str)
                assert isinstance(error["message"], str)

        check()
        metrics = client.get("/metrics").text
    assert 'code="internal"' not in metrics
    # The examples are fixed (derandomize): check that they reach the handlers.
    for reached in ("invalid_request", "unauthorized", "not_found", "replayed"):
        assert f'natroute_registry_errors_total{{code="{reached}"}}' in metrics
    assert 'natroute_registry_registrations_total{kind="again"}' in metrics


def test_valid_fuzzed_registrations_resolve(tmp_path: Path) -> None:
    """Any request the validators accept is stored and resolved as sent."""
    clock = FakeClock()
    app_settings = make_settings(tmp_path, register_burst=10**6, register_rate=1000.0)
    ip_ports = st.tuples(
        st.ip_addresses(v=4).map(str) | st.ip_addresses(v=6).map(lambda ip: f"[{ip}]"),
        st.integers(min_value=1, max_value=65535),
    ).map(lambda t: f"{t[0]}:{t[1]}")
    with (
        app_for(app_settings, clock) as app,
        serve_app(app) as url,
        httpx.Client(base_url=url) as client,
    ):

        @settings(max_examples=60, deadline=None)
        @given(
            endpoint=ip_ports | st.none(),
            lan=st.lists(ip_ports, max_size=16),
            xkey=st.binary(min_size=32, max_size=32) | st.none(),
        )
        def check(endpoint: str | None, lan: list[str], xkey: bytes | None) -> None:
            clock.advance(1)
            fields: dict[str, Any] = {
                "ed25519_public_key": KEY_B64,
                "x25519_public_key": None if xkey is None else b64encode(xkey),
                "endpoint": endpoint,
                "lan_addrs": lan,
                "relay_only": False,
                "timestamp_us": int(clock() * 1e6),
            }
            body = fields | {"signature": sign(KEY, ACTION_REGISTER, fields)}
            registered = client.post("/v1/nodes", json=body)
            assert registered.status_code == 200, registered.text
            view = client.get(f"/v1/nodes/{registered.json()['node_id']}").json()
            assert view.get("endpoint") == endpoint
            assert view["lan_addrs"] == lan
            assert view.get("x25519_public_key") == fields["x25519_public_key"]

        check()
