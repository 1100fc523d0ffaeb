"""Registry registration and beacon-list discovery against a fake registry app."""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Header, HTTPException

from natroute.beacon.registry import STREAM_URL_RETRY, RegistryLink
from natroute.beacon.settings import derive_beacon_id
from natroute.beacon.testing import running_beacon
from natroute.registry.client import AsyncRegistryClient
from natroute.routing.addr import format_addr
from natroute.routing.errors import RegistryError


class FakeRegistry:
    """The registry's beacon endpoints, in memory, with a switch to fail."""

    def __init__(self) -> None:
        self.registered: list[dict[str, Any]] = []
        self.tokens: list[str | None] = []
        self.beacons: list[dict[str, Any]] = []
        self.fail = False
        self.app = FastAPI()

        @self.app.post("/v1/beacons")
        async def register(
            body: dict[str, Any], authorization: str | None = Header(None)
        ) -> dict[str, Any]:
            if self.fail:
                raise HTTPException(500, "down")
            self.registered.append(body)
            self.tokens.append(authorization)
            return {"beacon_id": body["beacon_id"], "addr": body["addr"], "ttl": 60}

        @self.app.get("/v1/beacons")
        async def listing() -> dict[str, Any]:
            if self.fail:
                raise HTTPException(500, "down")
            return {"beacons": self.beacons}

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://registry"
        )


@pytest.mark.asyncio
async def test_beacon_registers_and_learns_peers(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeRegistry()
    async with (
        fake.client() as http,
        running_beacon(beacon_id=2) as other,
        running_beacon(
            beacon_id=7,
            registry_url="http://registry",
            registry_token="s3cret",
            advertise="203.0.113.5:9001",
            http_client=http,
        ) as beacon,
    ):
        fake.beacons = [
            {"id": 7, "addr": "203.0.113.5:9001"},  # itself: skipped
            {"id": 2, "addr": format_addr(other.udp_addr)},
            {"id": 3, "addr": "[2001:db8::1]:9001"},  # IPv6 peer, IPv4 socket
        ]
        with caplog.at_level(logging.WARNING, logger="natroute.beacon.service"):
            await beacon.refresh_peers()
        assert fake.registered[-1] == {"beacon_id": 7, "addr": "203.0.113.5:9001"}
        assert fake.tokens[-1] == "Bearer s3cret"
        assert beacon.snapshot().peers == (format_addr(other.udp_addr),)
        assert any(r.getMessage() == "beacon_peer_unresolved" for r in caplog.records)
        # The registry going down is logged, not fatal, and keeps the known peers.
        fake.fail = True
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="natroute.beacon.service"):
            await beacon.refresh_peers()
        assert [r.getMessage() for r in caplog.records] == ["beacon_registry_failed"]
        assert beacon.snapshot().peers == (format_addr(other.udp_addr),)
        assert beacon.ready


@pytest.mark.asyncio
async def test_advertise_defaults_to_bound_address_and_derives_id() -> None:
    fake = FakeRegistry()
    async with (
        fake.client() as http,
        running_beacon(
            beacon_id=0, registry_url="http://registry", registry_token="t0k3n", http_client=http
        ) as beacon,
    ):
        await beacon.refresh_peers()
        addr = format_addr(beacon.udp_addr)
        assert fake.registered[-1]["addr"] == addr
        assert fake.registered[-1]["beacon_id"] == derive_beacon_id(addr)


@pytest.mark.asyncio
async def test_without_a_token_the_beacon_only_reads_the_list() -> None:
    fake = FakeRegistry()
    async with (
        running_beacon(beacon_id=2) as other,
        fake.client() as http,
        running_beacon(beacon_id=7, registry_url="http://registry", http_client=http) as beacon,
    ):
        fake.beacons = [{"id": 2, "addr": format_addr(other.udp_addr)}]
        await beacon.refresh_peers()
        assert fake.registered == []  # registering needs the operator token
        assert beacon.snapshot().peers == (format_addr(other.udp_addr),)


def _transport(status: int, body: Any = None, raw: bytes | None = None) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        if raw is not None:
            return httpx.Response(status, content=raw)
        return httpx.Response(status, json=body)

    return httpx.MockTransport(handler)


def _refusing(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def _link(transport: httpx.MockTransport, token: str | None = "t") -> RegistryLink:
    return RegistryLink(AsyncRegistryClient("http://registry/", token=token, transport=transport))


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "transport",
    [
        pytest.param(httpx.MockTransport(_refusing), id="connect-error"),
        pytest.param(_transport(401, {"error": "bad token"}), id="http-401"),
        pytest.param(_transport(200, raw=b"not json"), id="not-json"),
        pytest.param(_transport(200, {"beacon_id": 1, "addr": "a:1"}), id="no-ttl"),
        pytest.param(_transport(200, {"beacon_id": 1, "addr": "a:1", "ttl": "soon"}), id="bad-ttl"),
        pytest.param(_transport(200, ["x"]), id="not-object"),
    ],
)
async def test_registry_link_errors(transport: httpx.MockTransport) -> None:
    link = _link(transport)
    with pytest.raises(RegistryError):
        await link.register(1, "192.0.2.1:9001")
    await link.client.aclose()


@pytest.mark.asyncio
async def test_registry_link_ttl_and_listing() -> None:
    body = {"beacon_id": 1, "addr": "a:1", "ttl": 45}
    assert await _link(_transport(200, body), token="t").register(1, "a:1") == 45
    listed = {"beacons": [{"id": 9, "addr": "b:2"}, {"id": 4, "addr": "a:1"}]}
    assert await _link(_transport(200, listed)).list_beacons() == [(4, "a:1"), (9, "b:2")]
    bad_bodies: list[Any] = [{}, {"beacons": "x"}, {"beacons": [{"id": 1}]}, []]
    for bad in bad_bodies:
        with pytest.raises(RegistryError):
            await _link(_transport(200, bad)).list_beacons()


@pytest.mark.asyncio
async def test_stream_url_is_sent_and_a_refusing_registry_is_retried_later() -> None:
    seen: list[dict[str, Any]] = []
    refuse = True

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        if refuse and "stream_url" in body:  # an older registry: unknown fields are refused
            return httpx.Response(422, json={"detail": "extra field"})
        return httpx.Response(200, json={"beacon_id": 1, "addr": "a:1", "ttl": 60})

    url = "ws://a:8001/v1/relay"
    link = _link(httpx.MockTransport(handler))
    assert await link.register(1, "a:1", url) == 60
    assert [("stream_url" in b) for b in seen] == [True, False]
    assert link.stream_url_accepted is False
    for _ in range(STREAM_URL_RETRY):  # registered without it meanwhile
        await link.register(1, "a:1", url)
    assert not any("stream_url" in b for b in seen[2:])
    refuse = False
    await link.register(1, "a:1", url)
    assert seen[-1] == {"beacon_id": 1, "addr": "a:1", "stream_url": url}
    assert link.stream_url_accepted is True


@pytest.mark.asyncio
async def test_a_refusal_other_than_422_is_not_a_missing_field() -> None:
    link = _link(_transport(403, {"error": {"code": "forbidden", "message": "no"}}))
    with pytest.raises(RegistryError, match="forbidden"):
        await link.register(1, "a:1", "ws://a:8001/v1/relay")
    assert link.stream_url_accepted is True


@pytest.mark.asyncio
async def test_node_key_lookup() -> None:
    key = bytes(range(32))

    def view(encoded: str) -> dict[str, Any]:
        return {"node_id": 7, "ed25519_public_key": encoded, "last_seen": 1.0, "key_age_days": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        node = request.url.path.rsplit("/", 1)[1]
        if node == "404":
            return httpx.Response(404, json={"error": {"code": "not_found", "message": "-"}})
        if node == "7":
            return httpx.Response(200, json=view(base64.b64encode(key).decode()))
        if node == "9":
            return httpx.Response(503, json={"error": {"code": "not_ready", "message": "-"}})
        return httpx.Response(200, json=view("bm90IGEga2V5"))

    link = _link(httpx.MockTransport(handler), token=None)
    assert await link.node_key(7) == key
    assert await link.node_key(404) is None
    assert await link.node_key(0) is None  # no such node ID: not asked
    with pytest.raises(RegistryError, match="bad_response"):
        await link.node_key(8)
    with pytest.raises(RegistryError, match="not_ready"):
        await link.node_key(9)
