"""The node fields other components build on: candidates, transport, name,
the beacons' stream URL, and the address policy (issue 10 item 3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from natroute.registry.client import (
    AsyncRegistryClient,
    Candidate,
    RegistryClientError,
    RegistryNotFoundError,
)
from natroute.registry.models import MAX_CANDIDATES
from natroute.registry.signing import ACTION_HEARTBEAT, sign
from natroute.routing.errors import UsageError

from .conftest import SQLITE_ONLY, TOKEN, FakeClock, app_with, make_settings
from .test_api import assert_error, register_body

CANDIDATES = [("203.0.113.5:4000", "srflx"), ("10.0.0.5:4000", "host"), ("[fd00::5]:4000", "host")]


@pytest.mark.asyncio
async def test_candidates_transport_and_name_round_trip(
    registry: AsyncRegistryClient, http: httpx.AsyncClient, key: Ed25519PrivateKey
) -> None:
    reg = await registry.register(
        key, endpoint="203.0.113.5:4000", candidates=CANDIDATES, transport="stream", name="web-1"
    )
    peer = await registry.resolve(reg.node_id)
    assert peer.candidates == tuple(Candidate(a, k) for a, k in CANDIDATES)
    assert peer.candidates[0] == ("203.0.113.5:4000", "srflx")  # a named tuple
    assert (peer.transport, peer.name) == ("stream", "web-1")
    assert await registry.resolve_name("web-1") == peer
    body = (await http.get(f"/v1/nodes/{reg.node_id}")).json()
    assert body["candidates"] == [{"addr": a, "kind": k} for a, k in CANDIDATES]
    assert body["transport"] == "stream"
    assert body["name"] == "web-1"
    listed = await registry.nodes()
    assert [(n.name, n.transport, n.candidates) for n in listed] == [
        ("web-1", "stream", peer.candidates)
    ]


@pytest.mark.asyncio
async def test_defaults_on_the_wire(
    registry: AsyncRegistryClient, http: httpx.AsyncClient, key: Ed25519PrivateKey
) -> None:
    reg = await registry.register(key, endpoint="203.0.113.5:4000")
    body = (await http.get(f"/v1/nodes/{reg.node_id}")).json()
    assert body["candidates"] == []
    assert body["transport"] == "udp"
    assert "name" not in body
    peer = await registry.resolve(reg.node_id)
    assert (peer.candidates, peer.transport, peer.name) == ((), "udp", None)


@pytest.mark.asyncio
async def test_relay_only_nodes_still_show_candidates(
    registry: AsyncRegistryClient, key: Ed25519PrivateKey
) -> None:
    await registry.register_beacon(1, "203.0.113.10:9001")
    reg = await registry.register(key, candidates=CANDIDATES[:1], relay_only=True)
    peer = await registry.resolve(reg.node_id)
    assert peer.relay_only
    assert peer.endpoint == "203.0.113.10:9001"
    assert peer.candidates == (("203.0.113.5:4000", "srflx"),)


@pytest.mark.asyncio
async def test_heartbeat_replaces_or_keeps_candidates_and_transport(
    registry: AsyncRegistryClient, key: Ed25519PrivateKey, clock: FakeClock
) -> None:
    reg = await registry.register(key, candidates=CANDIDATES, name="n1")
    clock.advance(1)
    await registry.heartbeat(key, reg.node_id)
    peer = await registry.resolve(reg.node_id)
    assert (len(peer.candidates), peer.transport, peer.name) == (3, "udp", "n1")
    await registry.heartbeat(
        key, reg.node_id, candidates=[("198.51.100.9:5000", "srflx")], transport="stream"
    )
    peer = await registry.resolve(reg.node_id)
    assert peer.candidates == (("198.51.100.9:5000", "srflx"),)
    assert (peer.transport, peer.name) == ("stream", "n1")  # a heartbeat keeps the name
    await registry.heartbeat(key, reg.node_id, candidates=[], transport="udp")
    peer = await registry.resolve(reg.node_id)
    assert (peer.candidates, peer.transport) == ((), "udp")
    clock.advance(1)
    await registry.register(key)  # a re-registration replaces everything
    peer = await registry.resolve(reg.node_id)
    assert (peer.candidates, peer.transport, peer.name) == ((), "udp", None)


@pytest.mark.asyncio
async def test_candidate_signature_covers_every_field(
    http: httpx.AsyncClient, key: Ed25519PrivateKey, clock: FakeClock
) -> None:
    cands = [{"addr": a, "kind": k} for a, k in CANDIDATES]
    body = register_body(key, clock, candidates=cands, transport="stream", name="a")
    for change in (
        {"candidates": cands[:2]},
        {"candidates": [cands[0] | {"kind": "host"}, *cands[1:]]},
        {"transport": "udp"},
        {"name": "b"},
    ):
        assert_error(await http.post("/v1/nodes", json=body | change), 401, "bad_signature")
    assert (await http.post("/v1/nodes", json=body)).status_code == 200


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"candidates": [{"addr": "203.0.113.5:4000", "kind": "relay"}]}, "candidates.0.kind"),
        ({"candidates": [{"addr": "203.0.113.5:4000"}]}, "candidates.0.kind"),
        ({"candidates": [{"addr": "host.example:1", "kind": "host"}]}, "candidates.0.addr"),
        ({"candidates": [{"addr": "224.0.0.251:5353", "kind": "host"}]}, "multicast"),
        ({"candidates": [{"addr": "203.0.113.5:1", "kind": "host", "x": 1}]}, "candidates.0.x"),
        ({"candidates": {"addr": "203.0.113.5:1", "kind": "host"}}, "candidates"),
        (
            {"candidates": [{"addr": f"203.0.113.{i}:1", "kind": "host"} for i in range(9)]},
            "candidates",
        ),
        (
            {
                "candidates": [
                    {"addr": "[2001:db8::1]:1", "kind": "host"},
                    {"addr": "[2001:db8:0::1]:1", "kind": "srflx"},
                ]
            },
            "listed twice",
        ),
        ({"transport": "tcp"}, "transport"),
        ({"transport": None}, "transport"),
        ({"name": "Web"}, "name"),
        ({"name": "-web"}, "name"),
        ({"name": "web-"}, "name"),
        ({"name": "a" * 64}, "name"),
        ({"name": ""}, "name"),
        ({"name": "web.example"}, "name"),
        ({"name": 5}, "name"),
    ],
)
@pytest.mark.asyncio
async def test_malformed_new_fields_are_422(
    http: httpx.AsyncClient,
    key: Ed25519PrivateKey,
    clock: FakeClock,
    change: dict[str, Any],
    needle: str,
) -> None:
    response = await http.post("/v1/nodes", json=register_body(key, clock, **change))
    assert_error(response, 422, "invalid_request")
    assert needle in response.json()["error"]["message"]


def test_candidate_cap_is_eight() -> None:
    assert MAX_CANDIDATES == 8


@pytest.mark.asyncio
async def test_names_are_unique_among_live_nodes(
    registry: AsyncRegistryClient, key: Ed25519PrivateKey, clock: FakeClock
) -> None:
    first = await registry.register(key, name="gateway")
    other_key = Ed25519PrivateKey.generate()
    with pytest.raises(RegistryClientError) as info:
        await registry.register(other_key, name="gateway")
    assert (info.value.status, info.value.code) == (409, "name_taken")
    # The refusal changed nothing: the other key has no node yet.
    assert [n.node_id for n in await registry.nodes()] == [first.node_id]
    clock.advance(1)
    assert (await registry.register(key, name="gateway")).node_id == first.node_id  # same key
    clock.advance(91)  # the holder expired: the name is free for another key
    second = await registry.register(other_key, name="gateway")
    assert (await registry.resolve_name("gateway")).node_id == second.node_id
    await registry.heartbeat(key, first.node_id)  # the old holder comes back without it
    assert (await registry.resolve(first.node_id)).name is None
    await registry.delete_node(second.node_id)  # deleting frees the name
    with pytest.raises(RegistryNotFoundError):
        await registry.resolve_name("gateway")
    clock.advance(1)
    assert (await registry.register(key, name="gateway")).node_id == first.node_id


@pytest.mark.asyncio
async def test_resolve_name_misses(
    registry: AsyncRegistryClient, http: httpx.AsyncClient, key: Ed25519PrivateKey, clock: FakeClock
) -> None:
    await registry.register(key, name="db")
    clock.advance(91)
    with pytest.raises(RegistryNotFoundError):
        await registry.resolve_name("db")  # expired
    assert_error(await http.get("/v1/names/nobody"), 404, "not_found")
    assert_error(await http.get("/v1/names/Bad_Name"), 422, "invalid_request")
    assert_error(await http.get("/v1/names/" + "a" * 64), 422, "invalid_request")
    with pytest.raises(UsageError):
        await registry.resolve_name("Bad/../x")


@pytest.mark.asyncio
async def test_beacon_stream_url(
    registry: AsyncRegistryClient, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    reg = await registry.register_beacon(2, "203.0.113.2:9001", "wss://b2.example.net/relay")
    assert (reg.beacon_id, reg.stream_url, reg.ttl) == (2, "wss://b2.example.net/relay", 60)
    await registry.register_beacon(1, "203.0.113.1:9001")  # an older beacon: no stream URL
    assert (await http.get("/v1/beacons")).json() == {
        "beacons": [
            {"id": 1, "addr": "203.0.113.1:9001"},
            {"id": 2, "addr": "203.0.113.2:9001", "stream_url": "wss://b2.example.net/relay"},
        ]
    }
    listed = await registry.beacons()
    assert [(b.id, b.stream_url) for b in listed] == [(1, None), (2, "wss://b2.example.net/relay")]
    assert (await registry.send({"type": "beacon_list"}))["beacons"][1] == {
        "id": 2,
        "addr": "203.0.113.2:9001",
        "stream_url": "wss://b2.example.net/relay",
    }
    clock.advance(1)
    await registry.register_beacon(2, "203.0.113.2:9001")  # re-registering without it clears it
    assert [b.stream_url for b in await registry.beacons()] == [None, None]
    headers = {"Authorization": f"Bearer {TOKEN}"}
    for bad in ("http://b.example/relay", "ws://", "ws://b.example/" + "x" * 300, 5):
        response = await http.post(
            "/v1/beacons",
            json={"beacon_id": 3, "addr": "203.0.113.3:9001", "stream_url": bad},
            headers=headers,
        )
        assert_error(response, 422, "invalid_request")
        assert "stream_url" in response.json()["error"]["message"]


LOCAL = ["127.0.0.1:4100", "[::1]:4100", "169.254.1.1:4000", "[fe80::1]:4000"]


@SQLITE_ONLY
@pytest.mark.parametrize("addr", LOCAL)
@pytest.mark.asyncio
async def test_local_addresses_refused_outside_dev(
    http: httpx.AsyncClient, key: Ed25519PrivateKey, clock: FakeClock, addr: str
) -> None:
    for change, field in (
        ({"endpoint": addr}, "endpoint:"),
        ({"lan_addrs": ["10.0.0.1:1", addr]}, "lan_addrs.1:"),
        ({"candidates": [{"addr": addr, "kind": "host"}]}, "candidates.0.addr:"),
    ):
        response = await http.post("/v1/nodes", json=register_body(key, clock, **change))
        assert_error(response, 422, "invalid_request")
        message = response.json()["error"]["message"]
        assert message.startswith(field), message
        assert "loopback" in message or "link-local" in message


@pytest.mark.asyncio
async def test_local_addresses_refused_in_heartbeats(
    registry: AsyncRegistryClient, http: httpx.AsyncClient, key: Ed25519PrivateKey, clock: FakeClock
) -> None:
    reg = await registry.register(key, endpoint="203.0.113.5:4000")
    clock.advance(1)
    for change in (
        {"endpoint": "127.0.0.1:4100"},
        {"candidates": [{"addr": "[::1]:1", "kind": "host"}]},
    ):
        fields = {"timestamp_us": int(clock() * 1e6)} | change
        body = fields | {
            "signature": sign(key, ACTION_HEARTBEAT, fields | {"node_id": reg.node_id})
        }
        response = await http.post(f"/v1/nodes/{reg.node_id}/heartbeat", json=body)
        assert_error(response, 422, "invalid_request")
    assert (await registry.resolve(reg.node_id)).endpoint == "203.0.113.5:4000"


@pytest.mark.parametrize(
    ("overrides", "allowed"),
    [
        ({"dev": True}, True),
        ({"allow_local_endpoints": True}, True),
        ({"dev": True, "allow_local_endpoints": False}, False),
        ({}, False),
    ],
)
@pytest.mark.asyncio
async def test_local_addresses_follow_the_setting(
    tmp_path: Path,
    database_url: str | None,
    clock: FakeClock,
    key: Ed25519PrivateKey,
    overrides: dict[str, Any],
    allowed: bool,
) -> None:
    settings = make_settings(tmp_path, database_url, **overrides)
    async with (
        app_with(settings, clock) as app,
        AsyncRegistryClient(
            "http://r", transport=httpx.ASGITransport(app=app), clock=clock
        ) as client,
    ):
        call = client.register(
            key, endpoint="127.0.0.1:4000", candidates=[("[fe80::1]:4000", "host")]
        )
        if not allowed:
            with pytest.raises(RegistryClientError) as info:
                await call
            assert info.value.code == "invalid_request"
            return
        reg = await call
        assert (await client.resolve(reg.node_id)).endpoint == "127.0.0.1:4000"
