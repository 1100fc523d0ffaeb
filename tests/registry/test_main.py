"""``natroute-registry`` as a real process: settings, refusal to start, and
durability across SIGKILL (nothing acknowledged is lost)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import SecretStr, ValidationError

from natroute._service.cli import InvalidSettings, build_settings
from natroute.registry.client import RegistryClient, RegistryNotFoundError
from natroute.registry.settings import DEV_TOKEN, Settings
from natroute.registry.signing import ACTION_HEARTBEAT, sign
from natroute.registry.testing import registry_process

from .conftest import TOKEN

STARTUP_TIMEOUT = 20.0


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NATROUTE_REGISTRY_")}
    env.update(extra)
    return env


def _heartbeat_body(
    key: Ed25519PrivateKey, node_id: int, endpoint: str | None = None
) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "endpoint": endpoint,
        "relay_only": None,
        "timestamp_us": int(time.time() * 1e6),
    }
    return fields | {"signature": sign(key, ACTION_HEARTBEAT, fields | {"node_id": node_id})}


async def _heartbeat_burst(
    url: str,
    beats: list[tuple[int, dict[str, Any]]],
    proc: subprocess.Popen[bytes],
    kill_after: int,
) -> dict[int, str]:
    """Send ``beats`` 16 at a time; SIGKILL the registry once ``kill_after`` are acknowledged.

    Returns:
        node ID → endpoint of every heartbeat the registry acknowledged (200).
    """
    acked: dict[int, str] = {}
    queue = list(beats)
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:

        async def worker() -> None:
            while queue:
                node_id, body = queue.pop(0)
                try:
                    response = await client.post(f"/v1/nodes/{node_id}/heartbeat", json=body)
                except httpx.HTTPError:
                    continue  # killed: not acknowledged
                if response.status_code == 200:
                    acked[node_id] = body["endpoint"]
                    if len(acked) == kill_after:
                        proc.send_signal(signal.SIGKILL)

        await asyncio.gather(*(worker() for _ in range(16)))
    return acked


def test_sigkill_loses_nothing_acknowledged(tmp_path: Path, database_url: str | None) -> None:
    db = tmp_path / "registry.db"
    # Env gives token and a listen address; the --http-listen flag must win over it.
    env = _env(NATROUTE_REGISTRY_TOKEN=TOKEN, NATROUTE_REGISTRY_HTTP_LISTEN="127.0.0.1:1")
    store_flags = ("--db", str(db)) if database_url is None else ("--database-url", database_url)
    flags = (*store_flags, "--register-burst", "1000")
    keys = [Ed25519PrivateKey.generate() for _ in range(12)]
    burst_keys = [Ed25519PrivateKey.generate() for _ in range(150)]
    with registry_process(tmp_path, *flags, env=env) as reg:
        proc, url = reg.popen, reg.url
        with RegistryClient(url, token=TOKEN) as client:
            ids = [
                client.register(
                    k,
                    x25519_public_key=bytes([i]) * 32,
                    endpoint=f"203.0.113.{i + 1}:{4000 + i}",
                    lan_addrs=[f"10.0.0.{i + 1}:4000"],
                    candidates=[(f"10.0.0.{i + 1}:4000", "host")],
                    relay_only=(i == 1),
                    name=f"node-{i}",
                ).node_id
                for i, k in enumerate(keys)
            ]
            client.register_beacon(77, "203.0.113.77:9001", "wss://b77.example/relay")
            client.set_relay_only(ids[2], True)
            client.delete_node(ids[3])
            beat = _heartbeat_body(keys[4], ids[4])
            assert httpx.post(f"{url}/v1/nodes/{ids[4]}/heartbeat", json=beat).status_code == 200
            before = {i: client.resolve(i) for i in ids if i != ids[3]}
            burst_ids = [client.register(k).node_id for k in burst_keys]
        # Heartbeats in flight when the process dies: each acknowledged one must survive.
        beats = [
            (n, _heartbeat_body(k, n, endpoint=f"198.51.{i // 250}.{i % 250 + 1}:5000"))
            for i, (k, n) in enumerate(zip(burst_keys, burst_ids, strict=True))
        ]
        acked = asyncio.run(_heartbeat_burst(url, beats, proc, kill_after=60))
        assert proc.wait(10) == -signal.SIGKILL
        assert len(acked) >= 60

    with registry_process(tmp_path, *flags, env=env) as reg:
        proc, url = reg.popen, reg.url
        with RegistryClient(url, token=TOKEN) as client:
            after = {i: client.resolve(i) for i in ids if i != ids[3]}
            assert after == before
            assert after[ids[1]].relay_only
            assert after[ids[1]].endpoint == "203.0.113.77:9001"
            assert after[ids[2]].relay_only
            assert after[ids[0]].x25519_public_key == bytes([0]) * 32
            assert after[ids[0]].name == "node-0"
            with pytest.raises(RegistryNotFoundError):
                client.resolve(ids[3])
            assert [(b.id, b.addr, b.stream_url) for b in client.beacons()] == [
                (77, "203.0.113.77:9001", "wss://b77.example/relay")
            ]
            for node_id, endpoint in acked.items():
                assert client.resolve(node_id).endpoint == endpoint
            # Same key, same ID after the restart; the deleted node's ID stays its own.
            assert client.register(keys[0]).node_id == ids[0]
            assert client.register(keys[3]).node_id == ids[3]
            # The replay guard survived too.
            replay = httpx.post(f"{url}/v1/nodes/{ids[4]}/heartbeat", json=beat)
            assert replay.status_code == 409
        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal it captured.
        assert proc.wait(10) in (0, -signal.SIGTERM)
    if database_url is None:
        # The lifespan closed the store: the last connection checkpointed the WAL away.
        assert not db.with_name(db.name + "-wal").exists()


def test_refuses_placeholder_token(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "natroute.registry.main", "--http-listen", "127.0.0.1:0"]
    cmd += ["--db", str(tmp_path / "r.db"), "--token", "changemechangeme"]
    done = subprocess.run(cmd, capture_output=True, env=_env(), timeout=30, check=False)
    assert done.returncode == 2
    assert b"NATROUTE_REGISTRY_TOKEN (--token) is a well-known placeholder" in done.stderr
    assert not (tmp_path / "r.db").exists()


def test_operator_token_policy(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"NATROUTE_REGISTRY_TOKEN \(--token\) is empty"):
        Settings(db=tmp_path / "r.db")
    for weak in ("changeme", "Secret", "short-token", "a" * 16, " " * 16, "0" * 16):
        with pytest.raises(ValidationError, match="NATROUTE_REGISTRY_TOKEN"):
            Settings(token=SecretStr(weak))
    assert Settings(token=SecretStr(TOKEN)).operator_token() == TOKEN
    assert Settings(token=SecretStr(f"  {TOKEN}\n")).operator_token() == TOKEN  # stripped
    assert Settings(dev=True).operator_token() == DEV_TOKEN
    assert Settings(dev=True, token=SecretStr("x")).operator_token() == "x"


def _built(argv: list[str]) -> Settings:
    return build_settings(Settings, argv, prog="natroute-registry").settings


def test_flags_build_settings() -> None:
    argv = ["--http-listen", "[::1]:0", "--db", "/tmp/x.db", "--dev"]
    argv += ["--beacon-addr", "b.example:9001", "--node-ttl", "30", "--beacon-ttl", "20"]
    settings = _built([*argv, "--log-level", "debug"])
    assert settings.listen_addr() == ("::1", 0)
    assert (settings.db, settings.dev, settings.beacon_addr) == (
        Path("/tmp/x.db"),
        True,
        "b.example:9001",
    )
    assert (settings.node_ttl, settings.beacon_ttl, settings.log_level) == (30.0, 20.0, "debug")
    assert settings.token.get_secret_value() == ""  # unset flags do not override
    old = build_settings(Settings, ["--dev", "--listen", "[::1]:1"], prog="natroute-registry")
    assert old.settings.http_listen == "[::1]:1"
    assert old.deprecated == (("--listen", "--http-listen"),)


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--http-listen", "nope"], "--http-listen / NATROUTE_REGISTRY_HTTP_LISTEN"),
        (["--beacon-addr", "bad host:1"], "--beacon-addr / NATROUTE_REGISTRY_BEACON_ADDR"),
        (["--node-ttl", "0"], "--node-ttl / NATROUTE_REGISTRY_NODE_TTL"),
    ],
)
def test_bad_flags_name_the_setting(argv: list[str], named: str) -> None:
    with pytest.raises(InvalidSettings, match=named):
        _built(["--dev", *argv])


def _run_main(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
    cmd = [sys.executable, "-m", "natroute.registry.main", *args]
    return subprocess.run(cmd, capture_output=True, env=_env(), timeout=timeout, check=False)


def test_taken_port_is_one_line_naming_the_setting(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = _run_main(
            "--dev", "--db", str(tmp_path / "r.db"), "--http-listen", f"127.0.0.1:{port}"
        )
    assert done.returncode == 2
    assert done.stderr.decode().splitlines() == [
        f"natroute-registry: cannot listen on 127.0.0.1:{port} (--http-listen / "
        "NATROUTE_REGISTRY_HTTP_LISTEN): Address already in use; free the port or choose "
        "another address"
    ]


def test_unopenable_database_is_one_line_naming_the_setting(tmp_path: Path) -> None:
    db = tmp_path / "no" / "r.db"
    done = _run_main("--dev", "--http-listen", "127.0.0.1:0", "--db", str(db))
    assert done.returncode == 2
    [line] = done.stderr.decode().splitlines()
    assert line.startswith(
        f"natroute-registry: cannot open the database {db} (--db / NATROUTE_REGISTRY_DB): "
    )
    assert line.endswith("; create its directory or choose a writable path")
    url = "postgresql://natroute:hunter2-password@127.0.0.1:1/registry"
    done = _run_main("--dev", "--http-listen", "127.0.0.1:0", "--database-url", url)
    assert done.returncode == 2
    [line] = done.stderr.decode().splitlines()
    assert "(--database-url / NATROUTE_REGISTRY_DATABASE_URL): " in line
    assert "hunter2" not in line


def test_a_database_from_a_newer_version_is_one_line(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("PRAGMA user_version=999")
    done = _run_main("--dev", "--http-listen", "127.0.0.1:0", "--db", str(db))
    assert done.returncode == 2
    [line] = done.stderr.decode().splitlines()
    assert re.fullmatch(
        rf"natroute-registry: cannot open the database {re.escape(str(db))} \(--db / "
        r"NATROUTE_REGISTRY_DB\): database schema 999 is newer than this code \(\d+\); "
        r"run the natroute version that wrote it, or a newer one",
        line,
    )


def test_database_url_must_be_postgresql() -> None:
    with pytest.raises(InvalidSettings, match="must be a postgresql:// URL"):
        _built(["--dev", "--database-url", "mysql://x/y"])
    assert _built(["--dev", "--database-url", " "]).database_url is None
    settings = _built(
        ["--dev", "--database-url", "postgres://u:p@db/r", "--no-allow-local-endpoints"]
    )
    assert settings.postgres_url() == "postgres://u:p@db/r"
    assert settings.allow_local_endpoints is False
    assert "u:p@" not in repr(settings)
