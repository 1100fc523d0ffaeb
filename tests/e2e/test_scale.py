"""Scenario 9 of issue 6: 20 sidecars behind 5 routers of mixed kinds.

Routers c1, c2, c3 (cone) and s1, s2 (symmetric), four nodes behind each, every
node with a demo app sending to every live node every 2 s. Every ordered pair
must deliver; the share of pairs that ended up direct is printed (docs/e2e.md
has the measured figure). Expected paths: nodes behind the same router go
direct over their LAN addresses (the routers do not hairpin, so the public
mappings would not do); cone nodes behind different routers punch through; a
symmetric node and a node behind another router stay on the relay.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import docker
import pytest

from .engine import Images
from .lab import Lab
from .world import FAST_SIDECAR_ENV, World, build_world, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.timeout(420)]

ROUTERS = {"c1": "cone", "c2": "cone", "c3": "cone", "s1": "symmetric", "s2": "symmetric"}
PER_ROUTER = 4
NODES = [(f"{router}-{i}", router) for router in ROUTERS for i in range(1, PER_ROUTER + 1)]


@pytest.fixture(scope="module")
def scale_world(docker_client: docker.DockerClient, images: Images) -> Iterator[World]:
    with Lab(docker_client) as lab:
        started = time.monotonic()
        built = build_world(
            lab,
            images,
            ROUTERS,
            NODES,
            sidecar_env=FAST_SIDECAR_ENV,
            demo_interval=2.0,
            report_interval=3.0,
            ready_timeout=180.0,
        )
        print(f"\nscale world: {len(NODES)} nodes ready in {time.monotonic() - started:.0f} s")
        try:
            yield built
        finally:
            built.http.close()


def _router(name: str) -> str:
    return name.rsplit("-", 1)[0]


def _expect_direct(a: str, b: str) -> bool:
    ra, rb = _router(a), _router(b)
    return ra == rb or ROUTERS[ra] == ROUTERS[rb] == "cone"


def _paths(world: World) -> dict[tuple[str, str], str]:
    """(a, b) -> the path a reports for b, for every ordered pair a knows."""
    names = world.by_id()
    paths = {}
    for a in world.nodes:
        for peer in world.status(a)["peers"]:
            b = names.get(peer["node_id"])
            if b is not None:
                paths[(a, b)] = peer["path"]
    return paths


def test_9_every_pair_delivers_at_scale_and_settles_on_its_expected_path(
    scale_world: World,
) -> None:
    world = scale_world
    assert len(world.nodes) >= 20
    assert len(world.routers) >= 5
    everyone = list(itertools.permutations(world.nodes, 2))
    started = time.monotonic()

    world.wait_delivered(everyone, more=1, timeout=180)
    all_delivered = time.monotonic() - started

    def settled() -> dict[tuple[str, str], str] | None:
        paths = _paths(world)
        ok = all(paths.get(p) == ("direct" if _expect_direct(*p) else "relay") for p in everyone)
        return paths if ok else None

    paths = wait_for(settled, "every pair on its expected path", timeout=90, interval=2.0)
    pairs = list(itertools.combinations(world.nodes, 2))
    direct = [p for p in pairs if paths[p] == "direct" and paths[(p[1], p[0])] == "direct"]
    before = world.received()
    world.wait_delivered(everyone, since=before, more=1, timeout=60)  # still delivering

    share = len(direct) / len(pairs)
    print(
        f"\nscale: {len(world.nodes)} sidecars, {len(world.routers)} routers, "
        f"{len(pairs)} pairs: all delivered after {all_delivered:.0f} s; "
        f"{len(direct)} direct ({share:.1%}), {len(pairs) - len(direct)} relayed"
    )
    assert share == pytest.approx(sum(_expect_direct(*p) for p in pairs) / len(pairs))
