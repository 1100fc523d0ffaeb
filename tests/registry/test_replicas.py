"""Two real registry processes on one database (issue 16): racing registrations
yield one node ID per key, a heartbeat on one replica is what the other
resolves, names stay unique, and a beacon registered on one is listed by the
other. On PostgreSQL (the supported multi-replica set-up) and on SQLite (two
processes sharing one file on one host)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from natroute.registry.client import (
    AsyncRegistryClient,
    RegistryClient,
    RegistryClientError,
    Resolved,
)
from natroute.registry.testing import RegistryProcess, registry_process

from .conftest import TOKEN

KEYS = 30


@pytest.fixture
def replicas(
    tmp_path: Path, database_url: str | None
) -> Iterator[tuple[RegistryProcess, RegistryProcess]]:
    """Two registry processes sharing one database."""
    store = (
        ("--db", str(tmp_path / "r.db"))
        if database_url is None
        else ("--database-url", database_url)
    )
    flags = (*store, "--token", TOKEN, "--register-burst", "10000", "--log-level", "warning")
    with (
        registry_process(tmp_path, *flags, name="a") as a,
        registry_process(tmp_path, *flags, name="b") as b,
    ):
        yield a, b


async def _race(urls: tuple[str, str], keys: list[Ed25519PrivateKey]) -> dict[int, set[int]]:
    """Every key registers twice through each replica, all at once."""
    clients = [AsyncRegistryClient(url, token=TOKEN) for url in (*urls, *urls)]
    try:
        calls = [
            client.register(key, endpoint=f"203.0.113.{i % 250 + 1}:4000")
            for i, key in enumerate(keys)
            for client in clients
        ]
        results = await asyncio.gather(*calls, return_exceptions=True)
    finally:
        for client in clients:
            await client.aclose()
    ids: dict[int, set[int]] = {}
    for n, result in enumerate(results):
        if isinstance(result, RegistryClientError) and result.code == "replayed":
            continue  # the same key's newer registration was already accepted
        assert not isinstance(result, BaseException), result
        ids.setdefault(n // len(clients), set()).add(result.node_id)
    return ids


def test_two_replicas_agree(
    replicas: tuple[RegistryProcess, RegistryProcess], database_url: str | None
) -> None:
    a_url, b_url = (r.url for r in replicas)
    keys = [Ed25519PrivateKey.generate() for _ in range(KEYS)]
    ids = asyncio.run(_race((a_url, b_url), keys))
    assert sorted(ids) == list(range(KEYS))  # every key got registered
    assert all(len(found) == 1 for found in ids.values()), ids  # one ID per key
    node_ids = [next(iter(ids[i])) for i in range(KEYS)]
    assert len(set(node_ids)) == KEYS

    with RegistryClient(a_url, token=TOKEN) as a, RegistryClient(b_url, token=TOKEN) as b:
        # A heartbeat on one replica is what the other resolves.
        for i, (key, node_id) in enumerate(zip(keys, node_ids, strict=True)):
            via = a if i % 2 else b
            via.heartbeat(key, node_id, endpoint=f"198.51.100.{i + 1}:5000", transport="stream")
        for i, node_id in enumerate(node_ids):
            seen_a: Resolved = a.resolve(node_id)
            seen_b: Resolved = b.resolve(node_id)
            assert seen_a == seen_b
            assert (seen_b.endpoint, seen_b.transport) == (f"198.51.100.{i + 1}:5000", "stream")

        # A beacon registered on A is listed by B.
        if database_url is not None:
            assert b.beacons() == []  # B has the empty list cached now
        a.register_beacon(9, "203.0.113.9:9001")
        deadline = time.monotonic() + 10  # a safety net: PostgreSQL notifies at once
        while not b.beacons():
            assert time.monotonic() < deadline, "B never listed the beacon"
            time.sleep(0.05)
        assert [(x.id, x.addr) for x in b.beacons()] == [(9, "203.0.113.9:9001")]
        assert [n.node_id for n in a.nodes()] == [n.node_id for n in b.nodes()] == sorted(node_ids)

        # A name taken through one replica is taken for the other.
        a.register(keys[0], name="shared")
        with pytest.raises(RegistryClientError) as info:
            b.register(keys[1], name="shared")
        assert info.value.code == "name_taken"
        assert b.resolve_name("shared").node_id == node_ids[0]

        # Losing one replica loses nothing it acknowledged; the other keeps serving.
        key = keys[2]
        a.heartbeat(key, node_ids[2], endpoint="203.0.113.51:4000")
    replicas[0].popen.kill()
    replicas[0].popen.wait(10)
    with RegistryClient(b_url) as b:
        assert b.resolve(node_ids[2]).endpoint == "203.0.113.51:4000"
        b.heartbeat(key, node_ids[2], endpoint="203.0.113.52:4000")
        assert b.resolve(node_ids[2]).endpoint == "203.0.113.52:4000"
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{a_url}/healthz", timeout=2)
