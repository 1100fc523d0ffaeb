"""Registry registration and beacon-list discovery against a fake registry app."""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Header, HTTPException

from natroute.beacon.registry import STREAM_URL_RETRY, RegistryClient, parse_beacon_entries
from natroute.beacon.settings import derive_beacon_id
from natroute.beacon.testing import running_beacon
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
        running_beacon(beacon_id=0, registry_url="http://registry", http_client=http) as beacon,
    ):
        await beacon.refresh_peers()
        addr = format_addr(beacon.udp_addr)
        assert fake.registered[-1]["addr"] == addr
        assert fake.tokens[-1] is None
        assert fake.registered[-1]["beacon_id"] == derive_beacon_id(addr)


def _transport(status: int, body: Any = None, raw: bytes | None = None) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        if raw is not None:
            return httpx.Response(status, content=raw)
        return httpx.Response(status, json=body)

    return httpx.MockTransport(handler)


def _refusing(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "transport",
    [
        pytest.param(httpx.MockTransport(_refusing), id="connect-error"),
        pytest.param(_transport(401, {"error": "bad token"}), id="http-401"),
        pytest.param(_transport(200, raw=b"not json"), id="not-json"),
        pytest.param(_transport(200, {"ttl": "soon"}), id="bad-ttl"),
        pytest.param(_transport(200, ["x"]), id="not-object"),
    ],
)
async def test_registry_client_errors(transport: httpx.MockTransport) -> None:
    async with httpx.AsyncClient(transport=transport) as http:
        client = RegistryClient(http, "http://registry/", "t")
        with pytest.raises(RegistryError):
            await client.register(1, "192.0.2.1:9001")


@pytest.mark.asyncio
async def test_registry_client_ttl_default_and_listing() -> None:
    async with httpx.AsyncClient(transport=_transport(200, {"beacon_id": 1})) as http:
        assert await RegistryClient(http, "http://r", None).register(1, "a:1") == 60
    body = {"beacons": [{"id": 9, "addr": "b:2"}, {"id": 4, "addr": "a:1"}]}
    async with httpx.AsyncClient(transport=_transport(200, body)) as http:
        assert await RegistryClient(http, "http://r", None).list_beacons() == [
            (4, "a:1"),
            (9, "b:2"),
        ]


def test_parse_beacon_entries_skips_malformed() -> None:
    body = {
        "beacons": [
            {"id": 1, "addr": "192.0.2.1:9001"},
            {"id": 0, "addr": "192.0.2.2:9001"},
            {"id": 2**32, "addr": "192.0.2.3:9001"},
            {"id": True, "addr": "192.0.2.4:9001"},
            {"id": "5", "addr": "192.0.2.5:9001"},
            {"id": 6, "addr": 9001},
            {"id": 7, "addr": "no-port"},
            "junk",
            {"id": 8, "addr": "[2001:db8::1]:9001"},
        ]
    }
    assert parse_beacon_entries(body) == [(1, "192.0.2.1:9001"), (8, "[2001:db8::1]:9001")]
    bad_bodies: list[Any] = [{}, {"beacons": "x"}, [], None]
    for bad in bad_bodies:
        with pytest.raises(RegistryError):
            parse_beacon_entries(bad)


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
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        client = RegistryClient(http, "http://r", "t")
        assert await client.register(1, "a:1", url) == 60
        assert [("stream_url" in b) for b in seen] == [True, False]
        assert client.stream_url_accepted is False
        for _ in range(STREAM_URL_RETRY):  # registered without it meanwhile
            await client.register(1, "a:1", url)
        assert not any("stream_url" in b for b in seen[2:])
        refuse = False
        await client.register(1, "a:1", url)
        assert seen[-1] == {"beacon_id": 1, "addr": "a:1", "stream_url": url}
        assert client.stream_url_accepted is True


@pytest.mark.asyncio
async def test_node_key_lookup() -> None:
    key = bytes(range(32))

    def handler(request: httpx.Request) -> httpx.Response:
        node = request.url.path.rsplit("/", 1)[1]
        if node == "404":
            return httpx.Response(404, json={"error": "not_found"})
        if node == "7":
            return httpx.Response(200, json={"ed25519_public_key": base64.b64encode(key).decode()})
        return httpx.Response(200, json={"ed25519_public_key": "bm90IGEga2V5"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        client = RegistryClient(http, "http://r", None)
        assert await client.node_key(7) == key
        assert await client.node_key(404) is None
        with pytest.raises(RegistryError, match="ed25519_public_key"):
            await client.node_key(8)
