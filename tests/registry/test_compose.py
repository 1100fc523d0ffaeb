"""The compose profile ``postgres`` (a PostgreSQL container and two registry
replicas on it), checked statically: no image can be pulled where CI runs."""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from natroute.registry.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[2]
REPLICAS = ("registry-pg-a", "registry-pg-b")


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return data


def _expand(text: str) -> str:
    """Compose's ``${VAR:-default}`` with no variable set."""
    out, rest = "", text
    while "${" in rest:
        head, _, tail = rest.partition("${")
        inner, _, rest = tail.partition("}")
        out += head + inner.partition(":-")[2]
    return out + rest


def test_profile_wires_two_replicas_to_the_database() -> None:
    services = _compose()["services"]
    database = services["postgres"]
    assert database["profiles"] == ["postgres"]
    assert "pg_isready" in database["healthcheck"]["test"]
    env = database["environment"]
    db_ip = database["networks"]["internet"]["ipv4_address"]
    seen_ips, seen_ports = set(), set()
    for name in REPLICAS:
        replica = services[name]
        assert replica["profiles"] == ["postgres"]
        assert replica["image"] == services["registry"]["image"]
        assert replica["build"]["target"] == "registry"
        assert replica["depends_on"] == {"postgres": {"condition": "service_healthy"}}
        url = urlsplit(_expand(replica["environment"][f"{ENV_PREFIX}DATABASE_URL"]))
        assert (url.scheme, url.hostname, url.port) == ("postgresql", db_ip, 5432)
        assert url.path == f"/{env['POSTGRES_DB']}"
        assert url.username == env["POSTGRES_USER"]
        assert url.password == _expand(env["POSTGRES_PASSWORD"])
        fields = {
            k.removeprefix(ENV_PREFIX).lower(): _expand(str(v))
            for k, v in replica["environment"].items()
        }
        settings = Settings.model_validate(fields)
        assert settings.postgres_url() is not None
        seen_ips.add(replica["networks"]["internet"]["ipv4_address"])
        seen_ports.add(replica["ports"][0].rsplit(":", 1)[0])
    assert len(seen_ips) == len(seen_ports) == 2
    subnet = ipaddress.ip_network("198.18.100.0/24")
    assert all(ipaddress.ip_address(ip) in subnet for ip in (*seen_ips, db_ip))


def test_default_world_does_not_need_the_profile() -> None:
    services = _compose()["services"]
    in_profile = {name for name, s in services.items() if "postgres" in s.get("profiles", [])}
    assert in_profile == {"postgres", *REPLICAS}
    for name, service in services.items():
        if name not in in_profile:
            assert not set(service.get("depends_on", {})) & in_profile, name


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker CLI to validate compose.yaml")
def test_compose_accepts_the_profile() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NATROUTE_")}
    done = subprocess.run(
        ["docker", "compose", "--profile", "postgres", "config", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    if done.returncode != 0 and "is not a docker command" in done.stderr:
        pytest.skip("docker compose is not installed")
    assert done.returncode == 0, done.stderr
