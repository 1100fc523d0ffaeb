"""Scenarios 1-8 of issue 6 on one shared world of real NAT routers.

World (one per module, see ``world.py``): registry, beacon-a, beacon-b; routers
cone-a and cone-b (cone), sym-a and sym-b (symmetric), each with one node
behind it; one node ``public`` on the internet. Every node runs a sidecar with
the shortened timers of ``FAST_SIDECAR_ENV`` and a demo app sending to every
live node each second. Each scenario asserts on what the admin APIs report and
on what the demo apps received. The scenarios run in file order and leave the
world as they found it (partitions healed, services restarted) in ``finally``.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import Any

import docker
import pytest

from .engine import Images
from .lab import Lab
from .world import BEACONS, FAST_SIDECAR_ENV, World, build_world, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.timeout(240)]

ROUTERS = {"cone-a": "cone", "cone-b": "cone", "sym-a": "symmetric", "sym-b": "symmetric"}
NODES = [("cone-a", "cone-a"), ("cone-b", "cone-b"), ("sym-a", "sym-a"), ("sym-b", "sym-b"),
         ("public", None)]  # fmt: skip
#: Why a pair whose NATs allow no direct path stays on the relay once its checks ended.
NO_DIRECT_PATH = {"relay_only", "local_symmetric_nat"}
#: Reasons of a direct path.
DIRECT = {"checked", "direct_restored", "better_path"}


@pytest.fixture(scope="module")
def world(docker_client: docker.DockerClient, images: Images) -> Iterator[World]:
    with Lab(docker_client) as lab:
        built = build_world(lab, images, ROUTERS, NODES, sidecar_env=FAST_SIDECAR_ENV)
        try:
            yield built
        finally:
            built.http.close()


def both_ways(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Each pair in both directions."""
    return [*pairs, *((b, a) for a, b in pairs)]


def path_of(world: World, a: str, b: str) -> tuple[str, str] | None:
    """(path, reason) that sidecar ``a`` reports for ``b``."""
    peer = world.peer(a, b)
    return None if peer is None else (peer["path"], peer["reason"])


def wait_paths(
    world: World, pairs: list[tuple[str, str]], path: str, reasons: set[str], timeout: float
) -> dict[tuple[str, str], dict[str, Any]]:
    """Wait until every (a, b) shows ``path`` with a reason in ``reasons`` on a's side."""

    def check() -> dict[tuple[str, str], dict[str, Any]] | None:
        seen = {(a, b): world.peer(a, b) for a, b in pairs}
        ok = all(p is not None and p["path"] == path and p["reason"] in reasons
                 for p in seen.values())  # fmt: skip
        return {k: v for k, v in seen.items() if v is not None} if ok else None

    return wait_for(check, f"{path} ({reasons}) on {pairs}", timeout)


def test_1_every_sidecar_learns_its_public_endpoint_and_nat_type(world: World) -> None:
    for name, node in world.nodes.items():
        status = world.status(name, peers=False)
        host, _ = status["public_endpoint"].rsplit(":", 1)
        observed = status["nat"]["observations"]

        assert status["ready"], (name, status)
        assert status["registered"], (name, status)
        assert host == node.public_ip, (name, status["public_endpoint"])
        assert status["nat"]["type"] == node.nat_type, (name, status["nat"])
        assert {a.rsplit(":", 1)[0] for a in observed.values()} == {node.public_ip}, observed
        assert len(observed) == 2, (name, observed)  # both beacons answered the discovery
        if node.kind == "symmetric":
            assert len(set(observed.values())) == 2, (name, observed)  # a port per beacon
            assert status["relay_only"] is True, name
        else:
            assert set(observed.values()) == {status["public_endpoint"]}, (name, observed)
            assert status["relay_only"] is False, name
        if node.kind == "public":
            assert status["public_endpoint"] == f"{node.ip}:4000"
        else:
            assert not host.startswith(node.ip.rsplit(".", 1)[0] + "."), "a LAN address leaked"
    everyone = [(a, b) for a, b in itertools.permutations(world.nodes, 2)]
    world.wait_delivered(everyone, more=1, timeout=40)


def test_2_cone_to_cone_is_direct_after_the_punch_and_delivers_both_ways(world: World) -> None:
    pair = [("cone-a", "cone-b")]
    wait_paths(world, both_ways(pair), "direct", DIRECT, timeout=30)
    before = world.received()
    direct_before = {k: world.peer(*k)["direct_recv"] for k in both_ways(pair)}  # type: ignore[index]

    world.wait_delivered(both_ways(pair), since=before, more=3)

    for a, b in both_ways(pair):
        peer = world.peer(a, b)
        assert peer is not None, (a, b)
        assert peer["path"] == "direct", (a, b, peer)
        assert peer["direct_recv"] > direct_before[(a, b)], (a, b, peer)  # it came direct
        assert peer["addr"].rsplit(":", 1)[0] == world.nodes[b].public_ip, peer


def test_3_symmetric_to_port_restricted_pairs_relay_and_deliver(world: World) -> None:
    pairs = [("sym-a", "cone-a"), ("sym-a", "cone-b"), ("sym-b", "cone-a"), ("sym-b", "cone-b"),
             ("sym-a", "sym-b")]  # fmt: skip
    seen = wait_paths(world, both_ways(pairs), "relay", NO_DIRECT_PATH, timeout=30)
    before = world.received()

    world.wait_delivered(both_ways(pairs), since=before, more=3)

    for (a, b), peer in seen.items():
        reasons = {event["reason"] for event in peer["events"]}
        assert "blackhole" not in reasons, (a, b, peer["events"])
        assert peer["direct_recv"] == 0, (a, b, peer)
        # on the relay since the first datagram; the checks tried and found nothing
        assert peer["events"][0]["path"] == "relay", (a, b, peer["events"])
        assert peer["pinned"], (a, b, peer)


def test_4_public_node_goes_direct_to_each_nat_kind(world: World) -> None:
    """Symmetric nodes too: the public side answers whatever port their NAT picks."""
    direct = [("public", "cone-a"), ("public", "cone-b"), ("public", "sym-a"), ("public", "sym-b")]
    wait_paths(world, both_ways(direct), "direct", DIRECT, timeout=30)
    before = world.received()

    world.wait_delivered(both_ways(direct), since=before, more=3)

    for a, b in both_ways(direct):
        assert path_of(world, a, b) is not None
        assert world.peer(a, b)["direct_recv"] > 0, (a, b)  # type: ignore[index]


def _partition(world: World, on: bool) -> None:
    router = world.routers["cone-a"].container
    peer_ip = world.routers["cone-b"].wan_ip
    code, out = world.lab.exec(router, ["nat-ctl", "partition", "on" if on else "off", peer_ip])
    assert code == 0, out


def test_5_partition_flips_the_cone_pair_to_relay_and_back(world: World) -> None:
    pair = [("cone-a", "cone-b")]
    wait_paths(world, both_ways(pair), "direct", DIRECT, timeout=30)
    try:
        _partition(world, True)
        cut_at = time.monotonic()
        seen = wait_paths(world, both_ways(pair), "relay", {"blackhole", "one_way"}, 30)
        flipped = time.monotonic() - cut_at
        before = world.received()
        world.wait_delivered(both_ways(pair), since=before, more=3)  # through the beacons
    finally:
        _partition(world, False)
    healed_at = time.monotonic()
    seen = wait_paths(world, both_ways(pair), "direct", {"direct_restored"}, timeout=40)
    restored = time.monotonic() - healed_at
    direct_before = {k: p["direct_recv"] for k, p in seen.items()}
    before = world.received()

    world.wait_delivered(both_ways(pair), since=before, more=3)

    for a, b in both_ways(pair):
        peer = world.peer(a, b)
        assert peer is not None, (a, b)
        assert peer["path"] == "direct", peer
        assert peer["direct_recv"] > direct_before[(a, b)], peer
    print(f"\npartition: relay after {flipped:.1f} s, direct again {restored:.1f} s after heal")


def _udp(world: World, router: str, on: bool) -> None:
    code, out = world.lab.exec(
        world.routers[router].container, ["nat-ctl", "partition", "off" if on else "on"]
    )
    assert code == 0, out


def _transport(world: World, name: str) -> str:
    return str(world.status(name, peers=False)["transport"])


def test_5b_a_node_whose_udp_is_blocked_moves_to_the_stream_and_back(world: World) -> None:
    """Issue 12: UDP blocked at run time -> stream relay; unblocked -> UDP and direct again."""
    pairs = [("cone-a", "cone-b"), ("public", "cone-b")]
    wait_paths(world, both_ways(pairs[:1]), "direct", DIRECT, timeout=30)
    try:
        _udp(world, "cone-b", on=False)  # the router forwards no UDP at all
        blocked_at = time.monotonic()
        wait_for(
            lambda: _transport(world, "cone-b") == "stream", "cone-b on the stream", timeout=40
        )
        on_stream = time.monotonic() - blocked_at
        before = world.received()
        world.wait_delivered(both_ways(pairs), since=before, more=3)  # through the stream relay
        peer = world.peer("cone-b", "cone-a")
        assert peer is not None
        assert (peer["path"], peer["reason"]) == ("relay", "no_udp"), peer
    finally:
        _udp(world, "cone-b", on=True)
    unblocked_at = time.monotonic()
    wait_for(lambda: _transport(world, "cone-b") == "udp", "cone-b back on UDP", timeout=40)
    back = time.monotonic() - unblocked_at
    wait_paths(world, both_ways(pairs[:1]), "direct", DIRECT, timeout=40)
    before = world.received()
    world.wait_delivered(both_ways(pairs), since=before, more=3)

    # blocked again: back to the stream
    try:
        _udp(world, "cone-b", on=False)
        wait_for(lambda: _transport(world, "cone-b") == "stream", "cone-b on the stream again", 40)
        world.wait_delivered(both_ways(pairs), since=world.received(), more=2)
    finally:
        _udp(world, "cone-b", on=True)
    wait_for(lambda: _transport(world, "cone-b") == "udp", "cone-b back on UDP again", 40)
    print(f"\nUDP blocked: on the stream after {on_stream:.1f} s, back on UDP {back:.1f} s after")


def _picks(world: World) -> dict[str, str]:
    return {name: world.status(name, peers=False)["beacon"]["pick"] for name in world.nodes}


def test_6_beacon_failure_fails_over_and_nodes_come_back(world: World) -> None:
    picks = _picks(world)
    victim = world.beacon_name(picks["sym-a"])  # a relayed node's beacon
    survivor = next(b for b in BEACONS if b != victim)
    movers = [name for name, pick in picks.items() if pick == world.beacon_addr(victim)]
    relayed = both_ways([("sym-a", "cone-a"), ("sym-a", "sym-b"), ("sym-a", "public")])
    container = world.beacons[victim]
    try:
        container.kill()
        killed_at = time.monotonic()

        def moved() -> dict[str, str] | None:
            now = _picks(world)
            return now if all(now[m] == world.beacon_addr(survivor) for m in movers) else None

        wait_for(moved, f"{movers} to leave {victim}", timeout=30)
        failover = time.monotonic() - killed_at
        before = world.received()
        world.wait_delivered(relayed, since=before, more=3, timeout=30)
    finally:
        container.start()
    wait_for(lambda: world.beacon_status(victim), f"{victim} back", timeout=30)

    def reregistered() -> dict[str, Any] | None:
        status = world.beacon_status(victim)
        now = _picks(world)
        back = [name for name, pick in now.items() if pick == world.beacon_addr(victim)]
        return status if back and status["nodes"] >= len(back) else None

    status = wait_for(reregistered, f"nodes to re-register at {victim}", timeout=60)
    before = world.received()
    world.wait_delivered(relayed, since=before, more=2, timeout=30)

    assert status["nodes"] >= 1, status
    print(f"\nbeacon {victim} killed: {movers} failed over in {failover:.1f} s; "
          f"{status['nodes']} node(s) registered again")  # fmt: skip


def test_7_cold_start_with_the_registry_down_uses_the_beacon_cache(world: World) -> None:
    node = world.nodes["cone-b"]
    before_id = node.node_id
    cache_before = world.status("cone-b", peers=False)["beacon"]
    assert cache_before["cache_addrs"] >= 1, cache_before
    try:
        node.demo.stop(timeout=5)
        node.sidecar.stop(timeout=5)
        world.registry.stop(timeout=5)
        node.sidecar.start()
        started = time.monotonic()
        wait_for(lambda: world.ready("cone-b"), "cone-b ready without a registry", timeout=60)
        cold = time.monotonic() - started
        status = world.status("cone-b", peers=False)
    finally:
        world.registry.start()
        if node.sidecar.status != "running":
            node.sidecar.start()
        world.restart_demo("cone-b")

    print(f"\ncold start: nat {status['nat']}")
    assert status["beacon"]["source"] == "cache", status["beacon"]
    assert status["node_id"] == before_id, status
    assert status["beacon"]["pick"] in {world.beacon_addr(b) for b in BEACONS}, status
    wait_for(lambda: world.ready("cone-b"), "cone-b still ready", timeout=10)
    pairs = both_ways([("cone-b", "cone-a"), ("cone-b", "sym-a"), ("cone-b", "public")])
    started = time.monotonic()
    world.wait_delivered(pairs, since=world.received(), more=2, timeout=60)
    resumed = time.monotonic() - started
    print(f"\ncold start without registry: ready in {cold:.1f} s (list from the cache); "
          f"delivering again {resumed:.1f} s after the registry returned")  # fmt: skip


def _spray(world: World, target: str, count: int, seed: int) -> None:
    result = world.lab.run_script(world.registry, "spray", target, str(count), str(seed))
    assert result == {"sent": count}, result


def test_8_garbage_is_dropped_and_counted_and_traffic_continues(world: World) -> None:
    count = 600
    beacon = "beacon-a"
    beacon_before = world.beacon_status(beacon)["dropped_total"]
    sidecar_before = world.status("public", peers=False)["counters"]["dropped_total"]

    _spray(world, world.beacon_addr(beacon), count, seed=6)
    _spray(world, f"{world.nodes['public'].ip}:4000", count, seed=8)

    wait_for(
        lambda: world.beacon_status(beacon)["dropped_total"] >= beacon_before + count // 2,
        "beacon drops counted",
        timeout=15,
    )
    wait_for(
        lambda: (
            world.status("public", peers=False)["counters"]["dropped_total"]
            >= sidecar_before + count // 2
        ),
        "sidecar drops counted",
        timeout=15,
    )
    for container in [*world.beacons.values(), world.nodes["public"].sidecar]:
        container.reload()
        assert container.status == "running", container.name
        assert container.attrs["RestartCount"] == 0, container.name
    assert world.ready("public")
    everyone = [(a, b) for a, b in itertools.permutations(world.nodes, 2)]
    world.wait_delivered(everyone, since=world.received(), more=2, timeout=40)
