"""The NAT lab itself: real routers map and filter like the NAT kinds they claim.

Topology (one lab for the module, all inside 198.18.0.0/15)::

    internet (WAN, internal)  beacon-a :9001    beacon-b :9001 and :9002
        |-- router cone        -- lan-cone        -- node-cone
        |-- router cone-b      -- lan-cone-b      -- node-cone-b
        |-- router symmetric   -- lan-symmetric   -- node-symmetric
        |-- router full-cone   -- lan-full-cone   -- node-full-cone
        |-- router udp-blocked -- lan-udp-blocked -- node-udp-blocked

The beacons are real ``natroute-beacon`` services; they answer Discover with
the source they observed (spec §3, §5.8), so each node learns the public
endpoint its router gives it, from one socket towards several destinations.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import docker
import pytest

from .engine import Images
from .lab import Lab, Router

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]

#: Router name -> NAT_MODE.
ROUTERS = {
    "cone": "cone",
    "cone-b": "cone",
    "symmetric": "symmetric",
    "full-cone": "full-cone",
    "udp-blocked": "udp-blocked",
}
NODE_HOST = 10


@dataclass(frozen=True)
class World:
    """The module's lab and what the tests address."""

    lab: Lab
    routers: dict[str, Router]
    nodes: dict[str, Any]
    beacon_b: Any
    beacon_a_ip: str
    beacon_b_ip: str

    @property
    def destinations(self) -> list[str]:
        """Beacon A, and beacon B on two ports (same host, another port)."""
        return [f"{self.beacon_a_ip}:9001", f"{self.beacon_b_ip}:9001", f"{self.beacon_b_ip}:9002"]


@pytest.fixture(scope="module")
def world(docker_client: docker.DockerClient, images: Images) -> Iterator[World]:
    with Lab(docker_client) as lab:
        internet = lab.network("internet", internal=True)
        beacon_a = lab.node(
            "beacon-a", images.beacon, (internet, internet.host(10)), None, command=None
        )
        beacon_b = lab.node(
            "beacon-b", images.beacon, (internet, internet.host(11)), None, command=None
        )
        # A second beacon process on beacon-b: one host, two ports.
        beacon_b.exec_run(
            ["natroute-beacon", "--listen", "0.0.0.0:9002", "--http", "127.0.0.1:8002"],
            user="natroute",
            detach=True,
        )
        routers: dict[str, Router] = {}
        nodes: dict[str, Any] = {}
        for index, (name, mode) in enumerate(ROUTERS.items(), start=2):
            lan = lab.network(f"lan-{name}")
            routers[name] = lab.router(
                f"router-{name}",
                images.router,
                mode,
                (internet, internet.host(index)),
                (lan, lan.host(2)),
                environment={"NAT_FULL_CONE_HOST": lan.host(NODE_HOST)},
            )
            nodes[name] = lab.node(
                f"node-{name}", images.runtime, (lan, lan.host(NODE_HOST)), lan.host(2)
            )
        lab.wait_http(beacon_a, "http://127.0.0.1:8001/readyz")
        lab.wait_http(beacon_b, "http://127.0.0.1:8001/readyz")
        lab.wait_http(beacon_b, "http://127.0.0.1:8002/readyz")
        yield World(lab, routers, nodes, beacon_b, internet.host(10), internet.host(11))


def _discover(world: World, mode: str) -> dict[str, Any]:
    return world.lab.run_script(world.nodes[mode], "probe", "discover", *world.destinations)


@pytest.mark.parametrize("mode", ["cone", "full-cone"])
def test_cone_router_keeps_one_public_port_for_every_destination(world: World, mode: str) -> None:
    result = _discover(world, mode)

    observed = result["observed"]
    assert len(observed) == 3, result
    assert {ip for ip, _ in observed} == {world.routers[mode].wan_ip}
    assert len({port for _, port in observed}) == 1, result


def test_symmetric_router_maps_each_destination_to_its_own_port(world: World) -> None:
    result = _discover(world, "symmetric")

    observed = result["observed"]
    assert len(observed) == 3, result
    assert {ip for ip, _ in observed} == {world.routers["symmetric"].wan_ip}
    assert len({port for _, port in observed}) == 3, result


def test_udp_blocked_router_lets_no_discover_through(world: World) -> None:
    result = _discover(world, "udp-blocked")

    assert "DiscoveryError" in result.get("error", ""), result


def _unsolicited(world: World, mode: str) -> list[list[Any]]:
    """What reaches node-MODE from beacon-b's host after it discovered via beacon-a."""
    node, output = world.nodes[mode], "/tmp/listen.jsonl"
    world.lab.start_script(node, "probe", "listen", world.destinations[0], "2", output=output)
    (first,) = world.lab.wait_json_lines(node, output, 1)
    ip, port = first["observed"]
    sent = world.lab.run_script(world.beacon_b, "probe", "send", f"{ip}:{port}", "3")
    assert sent == {"sent": 3}
    _, rest = world.lab.wait_json_lines(node, output, 2)
    received: list[list[Any]] = rest["received"]
    return received


def test_cone_router_drops_datagrams_from_hosts_it_never_sent_to(world: World) -> None:
    assert _unsolicited(world, "cone") == []


def test_full_cone_router_delivers_datagrams_from_any_host(world: World) -> None:
    received = _unsolicited(world, "full-cone")

    assert received, "full-cone router dropped unsolicited datagrams"
    assert {src for src, _, _ in received} == {world.beacon_b_ip}


def test_partition_drops_udp_to_one_peer_until_it_heals(world: World) -> None:
    router = world.routers["cone"].container
    a, b = world.destinations[0], world.destinations[1]
    node = world.nodes["cone"]
    try:
        code, out = world.lab.exec(router, ["nat-ctl", "partition", "on", world.beacon_a_ip])
        assert code == 0, out
        cut = world.lab.run_script(node, "probe", "discover", a)
        other = world.lab.run_script(node, "probe", "discover", b)
    finally:
        code, out = world.lab.exec(router, ["nat-ctl", "partition", "off", world.beacon_a_ip])
    assert code == 0, out
    healed = world.lab.run_script(node, "probe", "discover", a)

    assert "DiscoveryError" in cut.get("error", ""), cut
    assert other["observed"][0][0] == world.routers["cone"].wan_ip, other
    assert healed["observed"][0][0] == world.routers["cone"].wan_ip, healed


def test_router_reports_healthy(world: World) -> None:
    for mode, router in world.routers.items():
        code, out = world.lab.exec(router.container, ["nat-ctl", "health"])
        assert code == 0, f"{mode}: {out}"


def _punch(world: World, a: str, b: str) -> tuple[list[list[Any]], list[list[Any]]]:
    """Nodes A and B punch towards each other's beacon-observed endpoints.

    Returns:
        What A received and what B received.
    """
    run = uuid.uuid4().hex[:8]
    lab, beacon, observed = world.lab, world.destinations[0], {}
    for name in (a, b):
        lab.start_script(world.nodes[name], "probe", "punch", beacon, f"/tmp/peer-{run}", "2",
                         output=f"/tmp/punch-{run}.jsonl")  # fmt: skip
    for name in (a, b):
        (first,) = lab.wait_json_lines(world.nodes[name], f"/tmp/punch-{run}.jsonl", 1)
        observed[name] = "{}:{}".format(*first["observed"])
    for name, peer in ((a, b), (b, a)):
        write = ["sh", "-c", 'printf %s "$1" >"$0"', f"/tmp/peer-{run}", observed[peer]]
        code, out = lab.exec(world.nodes[name], write, user="natroute")
        assert code == 0, out
    results = [lab.wait_json_lines(world.nodes[name], f"/tmp/punch-{run}.jsonl", 2)[1]
               for name in (a, b)]  # fmt: skip
    return results[0]["received"], results[1]["received"]


def test_cone_to_cone_hole_punch_delivers_both_ways(world: World) -> None:
    to_a, to_b = _punch(world, "cone", "cone-b")

    assert {src for src, _, _ in to_a} == {world.routers["cone-b"].wan_ip}
    assert {src for src, _, _ in to_b} == {world.routers["cone"].wan_ip}


def test_symmetric_to_cone_hole_punch_fails_both_ways(world: World) -> None:
    to_symmetric, to_cone = _punch(world, "symmetric", "cone-b")

    assert to_symmetric == []
    assert to_cone == []
