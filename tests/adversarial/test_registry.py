"""Hostile input against a real ``natroute-registry`` process on 127.0.0.1
(issue 10, items 3 and 7).

* Node addresses a registry must never hand to peers are refused with 422 and
  a message naming the field and the reason, and are never stored.
* A weak operator token (and a weak sidecar admin token) stops the process at
  start with a non-zero status and a message naming the setting.
* A bounded flood of hostile registrations leaves the process's memory
  bounded (RSS read from ``/proc``), stores nothing, and the registry keeps
  serving legitimate nodes.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from natroute.registry.client import RegistryClient
from natroute.registry.signing import ACTION_REGISTER, b64encode, public_key_bytes, sign
from natroute.registry.testing import RegistryProcess, registry_command, registry_process, rss_bytes

TOKEN = "adversarial-operator-token-4f9c2e"
#: Addresses no registry may hand to peers (outside dev mode), with the word the
#: refusal must contain.
BAD_ENDPOINTS = [
    ("127.0.0.1:4100", "loopback"),  # a sidecar's own data plane
    ("[::1]:4100", "loopback"),
    ("224.0.0.251:5353", "multicast"),
    ("[ff02::1]:4000", "multicast"),
    ("255.255.255.255:4000", "broadcast"),
    ("0.0.0.0:4000", "unspecified"),
    ("[::]:4000", "unspecified"),
    ("169.254.169.254:80", "link-local"),  # a cloud metadata service
    ("[fe80::1]:4000", "link-local"),
    ("[::ffff:127.0.0.1]:4100", "loopback"),
]
FLOOD = 2000
#: Growth of the registry's RSS allowed across the flood.
RSS_SLACK = 24 * 1024 * 1024


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    """One registry for the module (each test leaves it with no node from its attack)."""
    directory = tmp_path_factory.mktemp("registry")
    flags = ("--db", str(directory / "r.db"), "--token", TOKEN, "--register-burst", "100000")
    with registry_process(directory, *flags) as proc:
        yield proc


def _register_body(key: Ed25519PrivateKey, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "ed25519_public_key": b64encode(public_key_bytes(key)),
        "timestamp_us": int(time.time() * 1e6),
    } | fields
    return body | {"signature": sign(key, ACTION_REGISTER, body)}


def _live_nodes(url: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith("natroute_registry_live_nodes "):
            return float(line.split()[1])
    raise AssertionError("no live-nodes gauge")


@pytest.mark.parametrize(("addr", "word"), BAD_ENDPOINTS)
def test_bad_node_addresses_are_refused(registry: RegistryProcess, addr: str, word: str) -> None:
    key = Ed25519PrivateKey.generate()
    for fields, field in (
        ({"endpoint": addr}, "endpoint"),
        ({"lan_addrs": ["10.0.0.5:4000", addr]}, "lan_addrs.1"),
        ({"candidates": [{"addr": addr, "kind": "srflx"}]}, "candidates.0.addr"),
    ):
        response = httpx.post(f"{registry.url}/v1/nodes", json=_register_body(key, **fields))
        assert response.status_code == 422, (fields, response.text)
        error = response.json()["error"]
        assert error["code"] == "invalid_request"
        assert error["message"].startswith(field), error
        assert word in error["message"], error
    with RegistryClient(registry.url, token=TOKEN) as client:
        stored = client.nodes()
    assert not [
        n for n in stored if addr in (n.endpoint, *n.lan_addrs, *(c.addr for c in n.candidates))
    ]


def test_someone_elses_unicast_host_stays_accepted(registry: RegistryProcess) -> None:
    # 198.51.100.7 may be a victim, but nothing in an address says so: it is a
    # normal unicast address, and private and benchmarking ranges are what labs use.
    with RegistryClient(registry.url) as client:
        for endpoint in ("198.51.100.7:4000", "10.1.2.3:4000", "198.18.100.2:4000"):
            reg = client.register(Ed25519PrivateKey.generate(), endpoint=endpoint)
            assert client.resolve(reg.node_id).endpoint == endpoint


def test_a_small_order_key_cannot_register_with_a_signature_of_anything(
    registry: RegistryProcess,
) -> None:
    # The identity point as key, R = identity and S = 0: the point equation
    # holds for every message, so a verifier that accepts small-order keys
    # (OpenSSL does) would let anyone heartbeat as this node (D44).
    identity = bytes([1]) + bytes(31)
    body = {"ed25519_public_key": b64encode(identity), "timestamp_us": int(time.time() * 1e6)}
    body["signature"] = b64encode(identity + bytes(32))
    response = httpx.post(f"{registry.url}/v1/nodes", json=body)
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "bad_signature"


@pytest.mark.parametrize(
    "token", ["aaaaaaaaaaaaaaaa", "0000000000000000", "changemechangeme", " " * 16]
)
def test_registry_refuses_to_start_with_a_weak_token(tmp_path: Path, token: str) -> None:
    cmd = [*registry_command(), "--http-listen", "127.0.0.1:0", "--db", str(tmp_path / "r.db")]
    done = subprocess.run(
        [*cmd, "--token", token], capture_output=True, timeout=30, check=False, env={}
    )
    assert done.returncode != 0
    assert b"NATROUTE_REGISTRY_TOKEN (--token)" in done.stderr, done.stderr
    assert b"Traceback" not in done.stderr
    assert not (tmp_path / "r.db").exists()


@pytest.mark.parametrize("token", ["x", "aaaaaaaaaaaaaaaa", "changemechangeme"])
def test_sidecar_refuses_to_start_with_a_weak_admin_token(tmp_path: Path, token: str) -> None:
    script = Path(sys.executable).with_name("natroute-sidecar")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "natroute.sidecar.main"]
    env = {"NATROUTE_SIDECAR_ADMIN_TOKEN": token, "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [*cmd, "--identity", str(tmp_path / "id.json"), "--registry-url", "http://127.0.0.1:1"],
        capture_output=True,
        timeout=30,
        check=False,
        env=env,
    )
    assert done.returncode != 0
    assert b"NATROUTE_SIDECAR_ADMIN_TOKEN (--admin-token)" in done.stderr, done.stderr
    assert not (tmp_path / "id.json").exists()


def _hostile_bodies(count: int) -> list[dict[str, Any]]:
    """Signed registrations, each from a fresh key, each carrying a bad address."""
    bodies = []
    for i in range(count):
        addr, _ = BAD_ENDPOINTS[i % len(BAD_ENDPOINTS)]
        key = Ed25519PrivateKey.generate()
        if i % 3 == 0:
            fields: dict[str, Any] = {"endpoint": addr}
        elif i % 3 == 1:
            fields = {"lan_addrs": [addr] * 16}
        else:
            multicast = [f"224.0.{i % 250}.{j}:{1000 + j}" for j in range(8)]
            fields = {"candidates": [{"addr": a, "kind": "host"} for a in multicast]}
        bodies.append(_register_body(key, **fields))
    return bodies


async def _flood(url: str, bodies: list[dict[str, Any]]) -> dict[int, int]:
    statuses: dict[int, int] = {}
    queue = list(bodies)
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:

        async def worker() -> None:
            while queue:
                response = await client.post("/v1/nodes", json=queue.pop())
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

        await asyncio.gather(*(worker() for _ in range(16)))
    return statuses


def test_flood_of_hostile_registrations_keeps_memory_bounded(registry: RegistryProcess) -> None:
    live = _live_nodes(registry.url)
    asyncio.run(_flood(registry.url, _hostile_bodies(300)))  # warm-up: allocator, caches
    before = rss_bytes(registry.pid)
    statuses = asyncio.run(_flood(registry.url, _hostile_bodies(FLOOD)))
    after = rss_bytes(registry.pid)
    assert statuses == {422: FLOOD}
    assert after - before < RSS_SLACK, (before, after)
    assert _live_nodes(registry.url) == live  # nothing hostile was stored
    with RegistryClient(registry.url) as client:  # and a real node still registers
        reg = client.register(Ed25519PrivateKey.generate(), endpoint="203.0.113.9:4000")
        assert client.resolve(reg.node_id).endpoint == "203.0.113.9:4000"
