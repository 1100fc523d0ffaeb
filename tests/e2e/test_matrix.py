"""The NAT matrix scenario: one node of every kind, every pair that has a path delivers.

World: ``matrix.MATRIX`` (docs/e2e.md, "The NAT matrix"): two public nodes
(one on the internet, one behind a ``public`` router), one node behind each
of full-cone, address-restricted, port-restricted (two), symmetric and
UDP-blocked routers, two nodes on one LAN, and two behind carrier-grade NATs
on different carriers; a registry and two gossiping beacons. Each node is a
real sidecar with the shortened timers of ``FAST_SIDECAR_ENV`` and a demo app
in its network namespace, sending to every live node each second.

Every ordered pair delivers (pairs with the UDP-blocked node through the
beacons' stream relay), and every pair settles on the path its NATs allow:
direct where ``matrix.expected_path`` says so, relay elsewhere.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import docker
import pytest

from .engine import Images
from .lab import Lab
from .matrix import MATRIX, MATRIX_PLAN, Path, expected_path, ordered_pairs
from .world import FAST_SIDECAR_ENV, World, build_world, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.timeout(420)]

#: How long a capture on the internet's hosts runs.
CAPTURE_SECONDS = 5
_TCPDUMP_LINE = re.compile(r"IP (\d+\.\d+\.\d+\.\d+)\.(\d+) > (\d+\.\d+\.\d+\.\d+)\.(\d+): UDP")


@pytest.fixture(scope="module")
def matrix_world(docker_client: docker.DockerClient, images: Images) -> Iterator[World]:
    with Lab(docker_client) as lab:
        started = time.monotonic()
        built = build_world(
            lab, images, MATRIX.routers, MATRIX.nodes, sidecar_env=FAST_SIDECAR_ENV,
            ready_timeout=120.0,
        )  # fmt: skip
        print(
            f"\nmatrix world: {len(built.nodes)} nodes ready in {time.monotonic() - started:.0f} s"
        )
        try:
            yield built
        finally:
            built.http.close()


def delivering_pairs() -> list[tuple[str, str]]:
    """Every ordered pair: each has a path (direct, relay, or relay over TCP)."""
    return list(ordered_pairs(MATRIX_PLAN))


def settled_paths(world: World) -> dict[tuple[str, str], str]:
    """(a, b) -> the path sidecar a reports for b, for every peer a knows."""
    names = world.by_id()
    paths = {}
    for a in world.nodes:
        for peer in world.status(a)["peers"]:
            b = names.get(peer["node_id"])
            if b is not None:
                paths[(a, b)] = peer["path"]
    return paths


def path_mismatches(world: World) -> dict[tuple[str, str], tuple[str | None, str]]:
    """Pairs whose settled path differs from the expected one: (settled, expected).

    Expected: ``direct`` where the NATs allow a direct path, ``relay`` elsewhere
    (through a beacon, over UDP or over TCP).
    """
    paths = settled_paths(world)
    wrong = {}
    for a, b in ordered_pairs(MATRIX_PLAN):
        expected = "direct" if expected_path(MATRIX_PLAN, a, b).direct_possible else "relay"
        if paths.get((a, b)) != expected:
            wrong[(a, b)] = (paths.get((a, b)), expected)
    return wrong


def test_every_pair_with_a_path_delivers(matrix_world: World) -> None:
    world = matrix_world
    pairs = delivering_pairs()
    started = time.monotonic()

    world.wait_delivered(pairs, more=1, timeout=120)
    first = time.monotonic() - started
    world.wait_delivered(pairs, since=world.received(), more=2, timeout=60)  # and keeps on

    streamed = [p for p in pairs if expected_path(MATRIX_PLAN, *p).path is Path.STREAM_RELAY]
    print(
        f"\nmatrix: {len(pairs)} ordered pairs delivered (all within {first:.0f} s of the "
        f"check), {len(streamed)} of them through the stream relay"
    )


def test_every_pair_settles_on_the_path_its_nats_allow(matrix_world: World) -> None:
    world = matrix_world
    world.wait_delivered(delivering_pairs(), more=1, timeout=120)

    wait_for(lambda: not path_mismatches(world), "every pair on its expected path", 60)
    wrong = path_mismatches(world)
    possible = [
        p for p in ordered_pairs(MATRIX_PLAN) if expected_path(MATRIX_PLAN, *p).direct_possible
    ]
    paths = settled_paths(world)
    direct = [p for p in possible if paths.get(p) == "direct"]
    print(f"\nmatrix: direct {len(direct)}/{len(possible)} ordered pairs where possible; "
          f"{len(wrong)} pairs off their expected path:")  # fmt: skip
    for (a, b), (settled, expected) in sorted(wrong.items()):
        print(f"   {a} -> {b}: {settled} (expected {expected})")
    assert not wrong, wrong


def _capture(world: World, containers: list[Any]) -> list[str]:
    """What tcpdump saw of UDP (not loopback) in each container, all at once."""
    output = "/tmp/capture.txt"
    command = ["timeout", str(CAPTURE_SECONDS), "tcpdump", "-i", "any", "-n", "-p", "-l", "-q",
               "udp and not net 127.0.0.0/8"]  # fmt: skip
    for container in containers:
        container.exec_run(["sh", "-c", 'exec "$@" >"$0" 2>&1', output, *command], detach=True)
    time.sleep(CAPTURE_SECONDS + 1.0)
    captures = []
    for container in containers:
        code, out = world.lab.exec(container, ["cat", output])
        assert code == 0, out
        captures.append(out)
    return captures


def test_the_internet_sees_only_router_and_public_addresses(matrix_world: World) -> None:
    world = matrix_world
    allowed = {router.wan_ip for router in world.routers.values() if router.wan_ip}
    allowed &= {world.internet.host(i) for i in range(256)}  # routers on the internet
    allowed |= {world.registry_ip, *(world.beacon_ip(b) for b in world.beacons)}
    allowed |= {node.ip for node in world.nodes.values() if node.router is None}
    watchers = [*world.beacons.values(), world.nodes["public"].sidecar]
    seen = {m.group(1) for out in _capture(world, watchers) for m in _TCPDUMP_LINE.finditer(out)}
    names = world.by_id()
    learned = {
        (a, names.get(peer["node_id"], "?")): peer["addr"].rsplit(":", 1)[0]
        for a in world.nodes
        for peer in world.status(a)["peers"]
        if peer.get("addr")
    }

    print(f"\nsources of UDP on the internet: {sorted(seen)}")
    talking = {n.public_ip for n in world.nodes.values() if n.nat_type != "unknown"}
    assert talking <= seen, sorted(talking - seen)  # every NAT with UDP was heard
    assert seen <= allowed, sorted(seen - allowed)
    for (a, b), ip in learned.items():  # where each sidecar sends its peers' frames
        same_lan = b in world.nodes and world.nodes[a].router is world.nodes[b].router
        assert ip in allowed or (same_lan and ip == world.nodes[b].ip), (a, b, ip)
