"""The operator-facing surface: offline docs, metrics, the pre-encoded beacon
list, and dependency wiring (routes take their collaborators from ``deps``)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI

from natroute import __version__
from natroute._service.docs import ASSETS, STATIC_PATH
from natroute.registry.beaconlist import MAX_AGE, BeaconListCache, encode_beacon_list
from natroute.registry.client import AsyncRegistryClient
from natroute.registry.deps import get_store
from natroute.registry.sqlite import SqliteStore
from natroute.registry.store import BeaconRecord, StoreConfig

from .conftest import SQLITE_ONLY, TOKEN, FakeClock

pytestmark = pytest.mark.asyncio


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} in metrics")


@SQLITE_ONLY
async def test_docs_work_offline(http: httpx.AsyncClient) -> None:
    for page in ("/docs", "/redoc"):
        html = (await http.get(page)).text
        assert "http://" not in html
        assert "https://" not in html, page
        urls = re.findall(r'(?:src|href)="([^"]+)"', html) + re.findall(r"url: '([^']+)'", html)
        urls += re.findall(r'spec-url="([^"]+)"', html)
        assert urls, page
        for url in urls:
            assert url.startswith("/"), url
            response = await http.get(url)
            assert response.status_code == 200, url
            assert len(response.content) > 0
    for asset in ASSETS:
        assert (await http.get(f"{STATIC_PATH}/{asset}")).status_code == 200
    schema = (await http.get("/openapi.json")).json()
    assert "/v1/names/{name}" in schema["paths"]
    listed = schema["paths"]["/v1/beacons"]["get"]["responses"]["200"]["content"]
    assert listed["application/json"]["schema"]["$ref"].endswith("/BeaconListResponse")


async def test_metrics_latency_build_info_and_process(
    http: httpx.AsyncClient, registry: AsyncRegistryClient, key: Ed25519PrivateKey
) -> None:
    await registry.register(key)
    for _ in range(3):
        await http.get("/v1/beacons")
    await http.get("/nowhere")
    await http.request("BREW", "/v1/beacons")
    text = (await http.get("/metrics")).text
    assert f'natroute_build_info{{version="{__version__}"}} 1.0' in text
    assert _metric(text, "process_resident_memory_bytes") > 0
    assert "process_cpu_seconds_total" in text
    count = 'natroute_registry_request_duration_seconds_count{method="GET",route="/v1/beacons"}'
    assert f"{count} 3.0" in text
    assert 'method="POST",route="/v1/nodes"' in text
    assert 'method="GET",route="unmatched"' in text
    assert 'method="other",route="/v1/beacons"' in text  # methods are a closed set
    assert 'le="0.0005"' in text


async def test_beacon_list_is_encoded_once_per_change(
    http: httpx.AsyncClient, registry: AsyncRegistryClient, clock: FakeClock
) -> None:
    def builds(text: str) -> float:
        return _metric(text, "natroute_registry_beacon_list_builds_total")

    await registry.register_beacon(2, "203.0.113.2:9001", "wss://b2.example/relay")
    bodies = {(await http.get("/v1/beacons")).content for _ in range(20)}
    assert len(bodies) == 1
    assert json.loads(bodies.pop())["beacons"][0]["stream_url"] == "wss://b2.example/relay"
    first = builds((await http.get("/metrics")).text)
    assert first == 1
    clock.advance(10)
    await registry.register_beacon(1, "203.0.113.1:9001")  # a registration invalidates
    assert [b.id for b in await registry.beacons()] == [1, 2]
    clock.advance(50)  # beacon 2 is at its TTL exactly: still listed
    assert [b.id for b in await registry.beacons()] == [1, 2]
    clock.advance(0.001)  # and now past it: the cached list expires with it
    assert [b.id for b in await registry.beacons()] == [1]
    assert builds((await http.get("/metrics")).text) == first + 3


async def test_beacon_list_bounded_staleness(tmp_path: Path, clock: FakeClock) -> None:
    """A change the cache was not told of (another process) shows within MAX_AGE."""
    config = StoreConfig(beacon_ttl=600)
    writer = SqliteStore(tmp_path / "r.db", config, clock=clock)
    reader = SqliteStore(tmp_path / "r.db", config, clock=clock)
    try:
        cache = BeaconListCache(clock, beacon_ttl=600)
        assert await cache.body(reader) == b'{"beacons":[]}'
        await writer.register_beacon(3, "203.0.113.3:9001")
        assert await cache.body(reader) == b'{"beacons":[]}'  # not told: still cached
        clock.advance(MAX_AGE + 0.001)
        assert await cache.body(reader) == encode_beacon_list(
            [BeaconRecord(3, "203.0.113.3:9001", 0.0)]
        )
        assert await cache.first_addr(reader) == "203.0.113.3:9001"
    finally:
        await writer.close()
        await reader.close()


@SQLITE_ONLY
async def test_routes_take_the_store_from_the_dependency(
    app: FastAPI, tmp_path: Path, clock: FakeClock, key: Ed25519PrivateKey
) -> None:
    other = SqliteStore(tmp_path / "other.db", StoreConfig(), clock=clock)
    app.dependency_overrides[get_store] = lambda: other
    try:
        transport = httpx.ASGITransport(app=app)
        async with AsyncRegistryClient("http://r", transport=transport, clock=clock) as client:
            reg = await client.register(key)
        assert (await other.resolve(reg.node_id)).node_id == reg.node_id
        assert (await app.state.services.store.live_counts()) == (0, 0)
    finally:
        app.dependency_overrides.clear()
        await other.close()


async def test_operator_token_is_compared_stripped(http: httpx.AsyncClient) -> None:
    headers = {"Authorization": f"Bearer  {TOKEN} "}
    body = {"beacon_id": 1, "addr": "203.0.113.1:9001"}
    assert (await http.post("/v1/beacons", json=body, headers=headers)).status_code == 200
