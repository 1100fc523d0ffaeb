"""The HTTP API through the async client and raw httpx (ASGITransport, fake clock)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from natroute.registry.client import (
    AsyncRegistryClient,
    RegistryClientError,
    RegistryNotFoundError,
)
from natroute.registry.signing import ACTION_REGISTER, b64encode, public_key_bytes, sign
from natroute.routing.errors import RegistryError

from .conftest import SQLITE_ONLY, TOKEN, FakeClock, app_with, make_settings

XPUB = bytes(range(32))


def register_body(key: Ed25519PrivateKey, clock: FakeClock, **fields: Any) -> dict[str, Any]:
    """A correctly signed registration body (fields may override defaults)."""
    body: dict[str, Any] = {
        "ed25519_public_key": b64encode(public_key_bytes(key)),
        "x25519_public_key": None,
        "endpoint": "203.0.113.5:4000",
        "lan_addrs": [],
        "relay_only": False,
        "timestamp_us": int(clock() * 1e6),
    }
    body.update(fields)
    return body | {"signature": sign(key, ACTION_REGISTER, body)}


async def client_http_register(app: Any, clock: FakeClock) -> httpx.Response:
    """One raw registration from 192.0.2.1 (the rate-limited address below)."""
    transport = httpx.ASGITransport(app=app, client=("192.0.2.1", 1234))
    async with httpx.AsyncClient(transport=transport, base_url="http://r") as raw:
        body = register_body(Ed25519PrivateKey.generate(), clock)
        return await raw.post("/v1/nodes", json=body)


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]


@pytest.mark.asyncio
async def test_register_resolve_normal_node(
    registry: AsyncRegistryClient, key: Ed25519PrivateKey, clock: FakeClock
) -> None:
    reg = await registry.register(
        key,
        x25519_public_key=XPUB,
        endpoint="203.0.113.5:4000",
        lan_addrs=["10.0.0.5:4000", "[fd00::5]:4000"],
    )
    assert reg.relay_only is False
    assert reg.ttl == 90
    assert reg.heartbeat_interval == 30
    peer = await registry.resolve(reg.node_id)
    assert peer.node_id == reg.node_id
    assert peer.endpoint == "203.0.113.5:4000"
    assert peer.lan_addrs == ("10.0.0.5:4000", "[fd00::5]:4000")
    assert peer.relay_only is False
    assert peer.ed25519_public_key == public_key_bytes(key)
    assert peer.x25519_public_key == XPUB
    assert peer.last_seen == clock()
    assert peer.key_age_days == 0


@pytest.mark.asyncio
async def test_normal_node_wire_shape_has_no_relay_only_key(
    registry: AsyncRegistryClient, http: httpx.AsyncClient, key: Ed25519PrivateKey
) -> None:
    reg = await registry.register(key, endpoint="203.0.113.5:4000")
    body = (await http.get(f"/v1/nodes/{reg.node_id}")).json()
    assert "relay_only" not in body
    assert "x25519_public_key" not in body
    assert body["lan_addrs"] == []


@pytest.mark.asyncio
async def test_reregister_same_key_same_id_and_key_age(
    registry: AsyncRegistryClient, key: Ed25519PrivateKey, clock: FakeClock
) -> None:
    first = await registry.register(key, endpoint="203.0.113.5:4000")
    clock.advance(3 * 86400)
    again = await registry.register(key, endpoint="198.51.100.7:4001")
    other = await registry.register(Ed25519PrivateKey.generate())
    assert first.node_id == again.node_id != other.node_id
    peer = await registry.resolve(first.node_id)
    assert peer.endpoint == "198.51.100.7:4001"
    assert peer.key_age_days == 3


@pytest.mark.asyncio
async def test_relay_only_uses_first_live_beacon(
    registry: AsyncRegistryClient, http: httpx.AsyncClient, key: Ed25519PrivateKey
) -> None:
    reg = await registry.register(
        key, endpoint="203.0.113.5:4000", lan_addrs=["10.0.0.5:4000"], relay_only=True
    )
    assert reg.relay_only is True
    no_beacon = await registry.resolve(reg.node_id)
    assert no_beacon.relay_only
    assert no_beacon.endpoint is None
    assert no_beacon.lan_addrs == ()
    await registry.register_beacon(20, "203.0.113.20:9001")
    await registry.register_beacon(10, "203.0.113.10:9001")
    body = (await http.get(f"/v1/nodes/{reg.node_id}")).json()
    assert body["relay_only"] is True
    assert body["endpoint"] == "203.0.113.10:9001"
    assert "lan_addrs" not in body


@pytest.mark.asyncio
async def test_relay_only_uses_configured_beacon_addr(
    tmp_path: Path, database_url: str | None, clock: FakeClock, key: Ed25519PrivateKey
) -> None:
    settings = make_settings(tmp_path, database_url, beacon_addr="beacon.example.net:9001")
    async with (
        app_with(settings, clock) as app,
        AsyncRegistryClient(
            "http://r", token=TOKEN, transport=httpx.ASGITransport(app=app), clock=clock
        ) as client,
    ):
        await client.register_beacon(1, "203.0.113.1:9001")
        reg = await client.register(key, endpoint="203.0.113.5:4000", relay_only=True)
        peer = await client.resolve(reg.node_id)
    assert peer.relay_only
    assert peer.endpoint == "beacon.example.net:9001"


@pytest.mark.asyncio
async def test_reregister_without_relay_only_clears_it(
    registry: AsyncRegistryClient, key: Ed25519PrivateKey, clock: FakeClock
) -> None:
    reg = await registry.register(key, endpoint="203.0.113.5:4000", relay_only=True)
    clock.advance(1)
    await registry.register(key, endpoint="203.0.113.5:4000")
    assert (await registry.resolve(reg.node_id)).relay_only is False


@pytest.mark.asyncio
async def test_operator_force_relay_only(
    registry: AsyncRegistryClient, key: Ed25519PrivateKey, clock: FakeClock
) -> None:
    reg = await registry.register(key, endpoint="203.0.113.5:4000")
    state = await registry.set_relay_only(reg.node_id, True)
    assert state.relay_only is True
    assert state.forced is True
    assert (await registry.resolve(reg.node_id)).relay_only is True
    beat = await registry.heartbeat(key, reg.node_id, relay_only=False)
    assert beat.relay_only is True  # the force wins over the node's own flag
    state = await registry.set_relay_only(reg.node_id, None)
    assert state.relay_only is False
    assert state.forced is None
    with pytest.raises(RegistryNotFoundError):
        await registry.set_relay_only(4242, False)


@pytest.mark.asyncio
async def test_operator_delete(registry: AsyncRegistryClient, key: Ed25519PrivateKey) -> None:
    reg = await registry.register(key)
    await registry.delete_node(reg.node_id)
    with pytest.raises(RegistryNotFoundError):
        await registry.resolve(reg.node_id)
    with pytest.raises(RegistryNotFoundError) as info:
        await registry.heartbeat(key, reg.node_id)
    assert info.value.code == "not_found"
    assert info.value.not_found
    assert (await registry.register(key)).node_id == reg.node_id


@pytest.mark.asyncio
async def test_heartbeat_and_expiry(
    registry: AsyncRegistryClient, key: Ed25519PrivateKey, clock: FakeClock
) -> None:
    reg = await registry.register(key, endpoint="203.0.113.5:4000")
    clock.advance(60)
    beat = await registry.heartbeat(key, reg.node_id, endpoint="198.51.100.9:5000")
    assert beat.node_id == reg.node_id
    assert beat.ttl == 90
    clock.advance(90)
    assert (await registry.resolve(reg.node_id)).endpoint == "198.51.100.9:5000"
    clock.advance(1)
    with pytest.raises(RegistryNotFoundError) as info:
        await registry.resolve(reg.node_id)
    assert isinstance(info.value, RegistryError)
    assert info.value.status == 404
    await registry.heartbeat(key, reg.node_id)  # kept in the DB: a heartbeat revives it
    assert (await registry.resolve(reg.node_id)).node_id == reg.node_id


@pytest.mark.asyncio
async def test_beacons_register_and_expire(
    registry: AsyncRegistryClient, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    response = await http.post(
        "/v1/beacons",
        json={"beacon_id": 42, "addr": "203.0.113.10:9001"},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert response.status_code == 200
    assert response.json() == {"beacon_id": 42, "addr": "203.0.113.10:9001", "ttl": 60}
    clock.advance(40)
    await registry.register_beacon(7, "[2001:db8::7]:9001")
    listed = (await http.get("/v1/beacons")).json()
    assert listed == {
        "beacons": [
            {"id": 7, "addr": "[2001:db8::7]:9001"},
            {"id": 42, "addr": "203.0.113.10:9001"},
        ]
    }
    clock.advance(21)
    assert [(b.id, b.addr) for b in await registry.beacons()] == [(7, "[2001:db8::7]:9001")]
    assert await registry.send({"type": "beacon_list"}) == {
        "type": "beacon_list_ok",
        "beacons": [{"id": 7, "addr": "[2001:db8::7]:9001"}],
    }


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 401, "unauthorized"),
        ({"Authorization": "Basic abc"}, 401, "unauthorized"),
        ({"Authorization": "Bearer"}, 401, "unauthorized"),
        ({"Authorization": "Bearer wrong-token"}, 403, "forbidden"),
        ({"Authorization": "Bearer " + TOKEN + "x"}, 403, "forbidden"),
        ({b"Authorization": b"Bearer \xe9\xe9"}, 403, "forbidden"),
    ],
)
@pytest.mark.asyncio
async def test_operator_auth_failures(
    http: httpx.AsyncClient, headers: dict[str, str] | dict[bytes, bytes], status: int, code: str
) -> None:
    for method, path, body in [
        ("POST", "/v1/beacons", {"beacon_id": 1, "addr": "203.0.113.1:1"}),
        ("PUT", "/v1/nodes/5/relay_only", {"force": True}),
        ("DELETE", "/v1/nodes/5", None),
    ]:
        response = await http.request(method, path, json=body, headers=headers)
        assert_error(response, status, code)
    assert (await http.get("/v1/beacons")).json() == {"beacons": []}


@pytest.mark.asyncio
async def test_forged_signature_rejected(
    http: httpx.AsyncClient, key: Ed25519PrivateKey, clock: FakeClock
) -> None:
    body = register_body(key, clock)
    tampered = body | {"endpoint": "198.51.100.66:6666"}
    assert_error(await http.post("/v1/nodes", json=tampered), 401, "bad_signature")
    other = Ed25519PrivateKey.generate()
    stolen = body | {"ed25519_public_key": b64encode(public_key_bytes(other))}
    assert_error(await http.post("/v1/nodes", json=stolen), 401, "bad_signature")
    zero_sig = body | {"signature": b64encode(bytes(64))}
    assert_error(await http.post("/v1/nodes", json=zero_sig), 401, "bad_signature")
    assert (await http.post("/v1/nodes", json=body)).status_code == 200


@pytest.mark.asyncio
async def test_replayed_registration_and_heartbeat_rejected(
    http: httpx.AsyncClient, key: Ed25519PrivateKey, clock: FakeClock
) -> None:
    body = register_body(key, clock)
    first = await http.post("/v1/nodes", json=body)
    assert first.status_code == 200
    assert_error(await http.post("/v1/nodes", json=body), 409, "replayed")
    node_id = first.json()["node_id"]

    beats: list[httpx.Request] = []

    async def capture(request: httpx.Request) -> httpx.Response:
        beats.append(request)
        return await http.send(request)

    transport = httpx.MockTransport(capture)
    clock.advance(1)
    async with AsyncRegistryClient("http://registry", transport=transport, clock=clock) as c:
        await c.heartbeat(key, node_id)
    replay = json.loads(beats[0].content)
    path = f"/v1/nodes/{node_id}/heartbeat"
    assert_error(await http.post(path, json=replay), 409, "replayed")
    # The heartbeat signature is bound to its node ID and endpoint.
    other = await http.post("/v1/nodes", json=register_body(Ed25519PrivateKey.generate(), clock))
    forged = replay | {"timestamp_us": replay["timestamp_us"] + 1}
    assert_error(await http.post(path, json=forged), 401, "bad_signature")
    moved = f"/v1/nodes/{other.json()['node_id']}/heartbeat"
    assert_error(await http.post(moved, json=replay), 401, "bad_signature")
    assert_error(await http.post("/v1/nodes/77/heartbeat", json=replay), 404, "not_found")


@pytest.mark.asyncio
async def test_stale_or_future_timestamp_rejected(
    http: httpx.AsyncClient, key: Ed25519PrivateKey, clock: FakeClock
) -> None:
    old = register_body(key, clock)
    clock.advance(61)
    assert_error(await http.post("/v1/nodes", json=old), 401, "clock_skew")
    future = register_body(key, clock, timestamp_us=int((clock() + 120) * 1e6))
    assert_error(await http.post("/v1/nodes", json=future), 401, "clock_skew")


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"endpoint": "203.0.113.5"}, "endpoint"),
        ({"endpoint": "203.0.113.5:0"}, "endpoint"),
        ({"endpoint": "203.0.113.5:70000"}, "endpoint"),
        ({"endpoint": "host.example:4000"}, "endpoint"),
        ({"endpoint": "2001:db8::1:4000"}, "endpoint"),
        ({"endpoint": "[203.0.113.5]:4000"}, "endpoint"),
        ({"endpoint": "[fe80::1%eth0]:4000"}, "endpoint"),
        ({"lan_addrs": ["10.0.0.1:1"] * 17}, "lan_addrs"),
        ({"lan_addrs": "10.0.0.1:1"}, "lan_addrs"),
        ({"x25519_public_key": b64encode(bytes(31))}, "x25519_public_key"),
        ({"x25519_public_key": "not base64!"}, "x25519_public_key"),
        ({"ed25519_public_key": base64.b64encode(bytes(33)).decode()}, "ed25519_public_key"),
        ({"relay_only": "yes"}, "relay_only"),
        ({"relay_only": 1}, "relay_only"),
        ({"timestamp_us": "1"}, "timestamp_us"),
        ({"timestamp_us": -1}, "timestamp_us"),
        ({"timestamp_us": 1.5}, "timestamp_us"),
        ({"signature": b64encode(bytes(63))}, "signature"),
        ({"surprise": 1}, "surprise"),
    ],
)
@pytest.mark.asyncio
async def test_malformed_registration_is_422(
    http: httpx.AsyncClient,
    key: Ed25519PrivateKey,
    clock: FakeClock,
    change: dict[str, Any],
    field: str,
) -> None:
    response = await http.post("/v1/nodes", json=register_body(key, clock) | change)
    assert_error(response, 422, "invalid_request")
    assert field in response.json()["error"]["message"]


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"beacon_id": 0, "addr": "203.0.113.1:9001"}, "beacon_id"),
        ({"beacon_id": 2**32, "addr": "203.0.113.1:9001"}, "beacon_id"),
        ({"beacon_id": "5", "addr": "203.0.113.1:9001"}, "beacon_id"),
        ({"beacon_id": 5, "addr": ""}, "addr"),
        ({"beacon_id": 5, "addr": "203.0.113.1"}, "addr"),
        ({"beacon_id": 5, "addr": ":9001"}, "addr"),
        ({"beacon_id": 5, "addr": "bad_host!:9001"}, "addr"),
        ({"beacon_id": 5, "addr": "[example.com]:9001"}, "addr"),
        ({"beacon_id": 5}, "addr"),
    ],
)
@pytest.mark.asyncio
async def test_malformed_beacon_registration_is_422(
    http: httpx.AsyncClient, body: dict[str, Any], problem: str
) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    response = await http.post("/v1/beacons", json=body, headers=headers)
    assert_error(response, 422, "invalid_request")
    assert problem in response.json()["error"]["message"]


@SQLITE_ONLY
@pytest.mark.asyncio
async def test_malformed_json_paths_and_methods(http: httpx.AsyncClient) -> None:
    json_type = {"Content-Type": "application/json"}
    assert_error(
        await http.post("/v1/nodes", content=b"{not json", headers=json_type), 400, "malformed_json"
    )
    assert_error(await http.post("/v1/nodes", json=[1, 2]), 422, "invalid_request")
    assert_error(await http.get("/v1/nodes/0"), 422, "invalid_request")
    assert_error(await http.get(f"/v1/nodes/{2**32}"), 422, "invalid_request")
    assert_error(await http.get("/v1/nodes/abc"), 422, "invalid_request")
    assert_error(await http.get("/v1/nodes/" + "9" * 5000), 422, "invalid_request")
    assert_error(await http.get("/v1/nodes/12"), 404, "not_found")
    assert_error(await http.get("/v2/nodes"), 404, "not_found")
    assert_error(await http.patch("/v1/beacons"), 405, "method_not_allowed")
    big_int = b'{"beacon_id": ' + b"9" * 5000 + b', "addr": "a:1"}'
    response = await http.post("/v1/beacons", content=big_int, headers=json_type)
    assert 400 <= response.status_code < 500


@SQLITE_ONLY
@pytest.mark.asyncio
async def test_body_limit_413(http: httpx.AsyncClient) -> None:
    big = b'{"pad": "' + b"x" * 20000 + b'"}'
    assert_error(await http.post("/v1/nodes", content=big), 413, "body_too_large")

    async def chunks() -> Any:
        for _ in range(20):
            yield b"x" * 1000

    assert_error(await http.post("/v1/nodes", content=chunks()), 413, "body_too_large")


@pytest.mark.asyncio
async def test_registration_rate_limit_per_ip(
    tmp_path: Path, database_url: str | None, clock: FakeClock, key: Ed25519PrivateKey
) -> None:
    settings = make_settings(tmp_path, database_url, register_burst=2, register_rate=0.5)
    async with app_with(settings, clock) as app:
        transport = httpx.ASGITransport(app=app, client=("192.0.2.1", 1234))
        async with AsyncRegistryClient("http://r", transport=transport, clock=clock) as client:
            await client.register(key)
            await client.register(key)
            with pytest.raises(RegistryClientError) as info:
                await client.register(key)
            assert (info.value.status, info.value.code) == (429, "rate_limited")
            refused = await client_http_register(app, clock)
            assert refused.headers["Retry-After"] == "2"
            clock.advance(2)  # 0.5/s → one token back
            await client.register(key)
        clock.advance(1)  # a new client instance starts its timestamps afresh
        other = httpx.ASGITransport(app=app, client=("192.0.2.2", 1234))
        async with AsyncRegistryClient("http://r", transport=other, clock=clock) as client:
            await client.register(key)  # another IP has its own bucket


@pytest.mark.asyncio
async def test_ops_endpoints_and_openapi(
    http: httpx.AsyncClient, registry: AsyncRegistryClient, key: Ed25519PrivateKey
) -> None:
    assert (await http.get("/healthz")).json() == {"status": "ok"}
    assert (await http.get("/readyz")).json() == {"status": "ready"}
    await registry.register(key)
    await http.get("/v1/nodes/0")
    text = (await http.get("/metrics")).text
    assert "natroute_registry_live_nodes 1.0" in text
    assert 'natroute_registry_registrations_total{kind="new"} 1.0' in text
    assert 'natroute_registry_errors_total{code="invalid_request"} 1.0' in text
    assert 'route="/v1/nodes/{node_id}",status="422"' in text
    schema = (await http.get("/openapi.json")).json()
    assert {"/v1/nodes", "/v1/nodes/{node_id}", "/v1/beacons"} <= set(schema["paths"])
    assert "ErrorBody" in schema["components"]["schemas"]


@pytest.mark.asyncio
async def test_readyz_503_when_database_closed(http: httpx.AsyncClient, app: Any) -> None:
    await app.state.services.store.close()
    assert_error(await http.get("/readyz"), 503, "not_ready")
    # Any other call says the store is unavailable (503), never 500.
    assert_error(await http.get("/v1/nodes/5"), 503, "store_unavailable")
    assert (await http.get("/metrics")).status_code == 200


@pytest.mark.asyncio
async def test_beacon_service_client_contract(http: httpx.AsyncClient, clock: FakeClock) -> None:
    """The beacon's own registry client (another component) against this app."""
    beacon_registry = pytest.importorskip("natroute.beacon.registry")

    def link(token: str) -> Any:
        client = AsyncRegistryClient("http://registry/", token=token, http=http)
        return beacon_registry.RegistryLink(client)

    client = link(TOKEN)
    assert await client.register(42, "203.0.113.10:9001") == 60
    assert await client.list_beacons() == [(42, "203.0.113.10:9001")]
    clock.advance(61)
    assert await client.list_beacons() == []
    with pytest.raises(RegistryError):
        await link("wrong-token").register(42, "203.0.113.10:9001")


@pytest.mark.asyncio
async def test_operator_lists_live_nodes(
    registry: AsyncRegistryClient, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    keys = [Ed25519PrivateKey.generate() for _ in range(3)]
    regs = [await registry.register(k, endpoint="203.0.113.5:4000") for k in keys[:2]]
    clock.advance(60)
    regs.append(await registry.register(keys[2], endpoint="203.0.113.6:4000", relay_only=True))
    await registry.register_beacon(10, "203.0.113.10:9001")
    listed = await registry.nodes()
    assert [n.node_id for n in listed] == sorted(r.node_id for r in regs)
    relay = next(n for n in listed if n.node_id == regs[2].node_id)
    assert relay.relay_only
    assert relay.endpoint == "203.0.113.10:9001"
    assert len(await registry.nodes(limit=1)) == 1
    clock.advance(31)  # the first two are past the 90 s TTL now
    assert [n.node_id for n in await registry.nodes()] == [regs[2].node_id]
    assert_error(await http.get("/v1/nodes"), 401, "unauthorized")
    assert (
        await http.get("/v1/nodes?limit=0", headers={"Authorization": f"Bearer {TOKEN}"})
    ).status_code == 422
