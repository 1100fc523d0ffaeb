"""A whole natroute world in a :class:`~.lab.Lab`: the e2e scenarios' fixture.

:func:`build_world` starts, under the lab's labels: an ``internet`` network with
a registry (dev mode, operator token ``dev``), beacon-a and beacon-b gossiping,
NAT routers with a LAN each, and nodes: a ``natroute-sidecar`` container (behind
a router via ``DEFAULT_ROUTE``, or directly on the internet) with a
``natroute-demo`` container in its network namespace. The demo sends to every
live node each interval and logs ``demo_report`` lines, which is how the tests
see datagrams delivered through the data planes.

Addresses follow ``topology.plan`` (the internet and each LAN are /24s the
lab picks inside 198.18.0.0/15): internet .2-.9 and .30-.99 routers, .10
registry, .11 beacon-a, .12 beacon-b, .20-.29 public nodes; each LAN .2
router, .10.. nodes (a carrier's LAN: the routers behind it at .3..). The
test process talks to the admin APIs over the lab bridges (the networks are
not internal; the engine masquerades none of them), so every read is one HTTP
request, not a ``docker exec``.

Every wait is bounded (:func:`wait_for`); a failure carries the last value seen.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import httpx

from .engine import Images, LabError
from .lab import Lab, LabNetwork, Router
from .topology import (
    BEACON_HOSTS,
    BEACONS,
    INTERNET,
    REGISTRY_HOST,
    NodePlan,
    Plan,
    RouterSpec,
    Topology,
    plan,
)

__all__ = [
    "ADMIN_PORT",
    "BEACONS",
    "BEACON_HANDOFF_AFTER",
    "FAST_SIDECAR_ENV",
    "Node",
    "World",
    "build_world",
    "demo_report",
    "expected_nat_type",
    "wait_for",
    "wiring",
]

T = TypeVar("T")

ADMIN_PORT = 8080
BEACON_PORT = 9001
BEACON_HTTP_PORT = 8001
REGISTRY_PORT = 9000
#: Beacon hand-off time in the lab (see build_world).
BEACON_HANDOFF_AFTER = 5.0
#: Shortened sidecar timers (defaults in brackets; docs/e2e.md lists them too).
FAST_SIDECAR_ENV = {
    "NATROUTE_SIDECAR_BLACKHOLE_THRESHOLD": "2",  # [8 s]
    "NATROUTE_SIDECAR_BLACKHOLE_MISSES": "2",  # [3]
    "NATROUTE_SIDECAR_DIRECT_CLEARS": "2",  # [3]
    "NATROUTE_SIDECAR_PROBE_INITIAL_INTERVAL": "1",  # [5 s]
    "NATROUTE_SIDECAR_PROBE_MAX_INTERVAL": "2",  # [120 s]
    "NATROUTE_SIDECAR_PEER_KEEPALIVE_INTERVAL": "1",  # [15 s]
    "NATROUTE_SIDECAR_BEACON_KEEPALIVE_INTERVAL": "1",  # [10 s]
    "NATROUTE_SIDECAR_BEACON_DEAD_AFTER": "3",  # [30 s]
    "NATROUTE_SIDECAR_BEACON_QUARANTINE": "6",  # [60 s]
    "NATROUTE_SIDECAR_REFRESH_INTERVAL": "4",  # [60 s]
    "NATROUTE_SIDECAR_REFRESH_JITTER": "1",  # [10 s]
    "NATROUTE_SIDECAR_STREAM_AFTER": "5",  # [30 s]
    "NATROUTE_SIDECAR_UDP_RETRY_INTERVAL": "1",  # [5 s]
    "NATROUTE_SIDECAR_UDP_RETRY_MAX_INTERVAL": "2",  # [60 s]
}


def wait_for(check: Callable[[], T | None], what: str, timeout: float, interval: float = 0.5) -> T:
    """Poll ``check`` until it returns something truthy, at most ``timeout`` seconds.

    Transport errors of the admin APIs count as "not yet".

    Returns:
        The first truthy value.

    Raises:
        AssertionError: the deadline passed (with the last value or error seen).
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = check()
        except (httpx.HTTPError, ValueError) as exc:
            value, last = None, exc
        else:
            last = value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s; last: {last!r}"[:3000])
        time.sleep(interval)


def expected_nat_type(topology_plan: Plan, router: str | None) -> str:
    """The NAT type (sidecar ``nat.type``) a node behind ``router`` must report.

    The NATs on its way out compose: one endpoint-dependent mapping makes the
    whole path endpoint-dependent; behind a UDP-blocked router no beacon answers.
    """
    if router is None:
        return "none"
    presets = set()
    while router is not None:
        spec = topology_plan.routers[router].spec
        presets.add(spec.canonical)
        router = spec.behind
    if "udp-blocked" in presets:
        return "unknown"
    return "endpoint_dependent" if "symmetric" in presets else "endpoint_independent"


@dataclass
class Node:
    """One sidecar and its demo app."""

    name: str
    kind: str  # the router's NAT_MODE as written, or "public" on the internet
    ip: str
    sidecar: Any
    demo: Any
    router: Router | None
    #: The address its datagrams reach the internet with (the outermost router's WAN).
    public_ip: str = ""
    #: The NAT type its sidecar must report (:func:`expected_nat_type`).
    nat_type: str = "none"
    port: int = 4000
    node_id: int = 0
    #: Unix second the demo app last (re)started; older log lines are another run's.
    demo_since: int = 0

    @property
    def admin(self) -> str:
        """Base URL of its admin API, reachable from the test process."""
        return f"http://{self.ip}:{ADMIN_PORT}"


def demo_report(logs: bytes) -> dict[str, Any] | None:
    """The last ``demo_report`` line of a demo application's log (None: none yet)."""
    for line in reversed(logs.decode("utf-8", "replace").splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict) and value.get("event") == "demo_report":
            return value
    return None


@dataclass
class World:
    """A running world; every read goes to the admin APIs or the demo logs."""

    lab: Lab
    images: Images
    http: httpx.Client
    internet: LabNetwork
    registry: Any
    beacons: dict[str, Any]
    routers: dict[str, Router]
    nodes: dict[str, Node] = field(default_factory=dict)
    demo_env: dict[str, str] = field(default_factory=dict)
    plan: Plan = field(default_factory=Plan)
    networks: dict[str, LabNetwork] = field(default_factory=dict)

    # --- addresses ------------------------------------------------------------
    def address(self, where: tuple[str, int]) -> str:
        """The address of a plan entry (network name, host index)."""
        network, index = where
        return self.networks[network].host(index)

    @property
    def registry_ip(self) -> str:
        """The registry's address."""
        return self.internet.host(REGISTRY_HOST)

    def beacon_ip(self, name: str) -> str:
        """beacon-a is .11, beacon-b .12."""
        return self.internet.host(BEACON_HOSTS[name])

    def beacon_addr(self, name: str) -> str:
        """A beacon's UDP ``host:port``."""
        return f"{self.beacon_ip(name)}:{BEACON_PORT}"

    def beacon_name(self, addr: str) -> str:
        """The beacon at ``host:port``."""
        return next(name for name in BEACONS if self.beacon_addr(name) == addr)

    def by_id(self) -> dict[int, str]:
        """Node ID -> node name."""
        return {node.node_id: name for name, node in self.nodes.items()}

    # --- reads ----------------------------------------------------------------
    def get(self, url: str) -> Any:
        """GET a JSON document (raises ``httpx.HTTPError`` on failure)."""
        response = self.http.get(url)
        response.raise_for_status()
        return response.json()

    def status(self, name: str, *, peers: bool = True) -> dict[str, Any]:
        """A sidecar's ``/v1/status`` (with its peers)."""
        node = self.nodes[name]
        result: dict[str, Any] = self.get(f"{node.admin}/v1/status?peers={str(peers).lower()}")
        return result

    def peer(self, name: str, other: str) -> dict[str, Any] | None:
        """What sidecar ``name`` reports about ``other`` (None: not a peer yet)."""
        other_id = self.nodes[other].node_id
        for peer in self.status(name)["peers"]:
            if peer["node_id"] == other_id:
                return dict(peer)
        return None

    def beacon_status(self, name: str) -> dict[str, Any]:
        """A beacon's ``/v1/status``."""
        url = f"http://{self.beacon_ip(name)}:{BEACON_HTTP_PORT}/v1/status"
        result: dict[str, Any] = self.get(url)
        return result

    def report(self, name: str) -> dict[str, Any] | None:
        """The last ``demo_report`` line of a node's demo app (None: none yet)."""
        node = self.nodes[name]
        logs = node.demo.logs(tail=30, since=node.demo_since) if node.demo_since else None
        text: bytes = logs if logs is not None else node.demo.logs(tail=30)
        return demo_report(text)

    def received(self) -> dict[tuple[str, str], int]:
        """(source name, destination name) -> datagrams the destination's demo received."""
        names = self.by_id()
        counts: dict[tuple[str, str], int] = {}
        for dst in self.nodes:
            report = self.report(dst) or {}
            for src_id, count in (report.get("received") or {}).items():
                src = names.get(int(src_id))
                if src is not None:
                    counts[(src, dst)] = int(count)
        return counts

    def wait_delivered(
        self,
        pairs: Iterable[tuple[str, str]],
        *,
        since: Mapping[tuple[str, str], int] | None = None,
        more: int = 2,
        timeout: float = 30.0,
    ) -> dict[tuple[str, str], int]:
        """Wait until each (src, dst) pair delivered ``more`` datagrams beyond ``since``.

        Returns:
            The counts when every pair had.
        """
        wanted = list(pairs)
        base = since or {}
        deadline = time.monotonic() + timeout
        while True:
            counts = self.received()
            short = {p: (base.get(p, 0), counts.get(p, 0)) for p in wanted
                     if counts.get(p, 0) < base.get(p, 0) + more}  # fmt: skip
            if not short:
                return counts
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"not {more} more datagrams within {timeout} s on (src, dst): "
                    f"(before, now) {short}"
                )
            time.sleep(1.0)

    def ready(self, name: str) -> bool:
        """The sidecar answers ``/readyz`` with 200."""
        return self.http.get(f"{self.nodes[name].admin}/readyz").status_code == 200

    # --- changes --------------------------------------------------------------
    def restart_demo(self, name: str) -> None:
        """Restart a demo app (after its sidecar restarted: it joins the new namespace).

        Its counters start again from zero, so its reports before the restart are
        ignored from now on.
        """
        node = self.nodes[name]
        node.demo_since = int(time.time())
        node.demo.restart(timeout=5)


def _answers(http: httpx.Client, url: str) -> bool:
    return http.get(url).is_success


def wiring(registry_ip: str, beacon_ips: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """The settings that wire a world's services together, by role.

    ``sidecar``, ``demo``, and each beacon by name; compose.yaml sets the same
    values (``test_compose.py`` checks). Lab timers and tokens are not wiring.
    """
    registry = f"http://{registry_ip}:{REGISTRY_PORT}"
    beacons = {name: f"{ip}:{BEACON_PORT}" for name, ip in beacon_ips.items()}
    roles = {
        "sidecar": {
            "NATROUTE_SIDECAR_REGISTRY_URL": registry,
            "NATROUTE_SIDECAR_BEACONS": ",".join(beacons.values()),
            "NATROUTE_SIDECAR_HTTP_LISTEN": f"0.0.0.0:{ADMIN_PORT}",
            "NATROUTE_SIDECAR_APP_DELIVER": "127.0.0.1:4101",
        },
        "demo": {"NATROUTE_DEMO_REGISTRY_URL": registry},
    }
    for name, addr in beacons.items():
        roles[name] = {
            "NATROUTE_BEACON_ADVERTISE": addr,
            "NATROUTE_BEACON_PEERS": ",".join(a for b, a in beacons.items() if b != name),
            "NATROUTE_BEACON_REGISTRY_URL": registry,
        }
    return roles


def _wiring(world: World) -> dict[str, dict[str, str]]:
    return wiring(world.registry_ip, {name: world.beacon_ip(name) for name in BEACONS})


def build_world(
    lab: Lab,
    images: Images,
    routers: Mapping[str, str | RouterSpec],
    nodes: Sequence[tuple[str, str | None]],
    *,
    sidecar_env: Mapping[str, str] | None = None,
    router_env: Mapping[str, str] | None = None,
    demo_interval: float = 1.0,
    report_interval: float = 1.0,
    ready_timeout: float = 90.0,
    app_command: Sequence[str] = ("natroute-demo",),
    app_prefix: str = "NATROUTE_DEMO_",
    app_env: Mapping[str, str] | None = None,
) -> World:
    """Start a world and wait until every sidecar is ready.

    Args:
        lab: the lab that owns (and removes) everything.
        images: the built images.
        routers: router name -> NAT_MODE or a :class:`~.topology.RouterSpec` (a
            carrier router comes before the routers behind it).
        nodes: (node name, router name or None for a node on the internet).
        sidecar_env: extra ``NATROUTE_SIDECAR_*`` settings for every sidecar.
        router_env: extra settings for every router (e.g. ``NAT_MAPPING_TIMEOUT``).
        demo_interval: the demo apps' send interval.
        report_interval: the demo apps' report interval.
        ready_timeout: seconds for everything to become ready.
        app_command: the application beside each sidecar (default the demo).
        app_prefix: its settings' environment prefix (``NATROUTE_PROBE_`` for
            ``natroute-probe``, which takes the same registry and interval settings).
        app_env: extra environment of that application.

    Returns:
        The world, node IDs filled in. Close its ``http`` client when done.

    Raises:
        LabError: a router did not come up.
        AssertionError: a service did not become ready in time.
        ValueError: the topology does not fit the address plan.
    """
    topology_plan = plan(Topology.of(routers, nodes))
    internet = lab.network(INTERNET)
    registry = lab.node(
        "registry",
        images.registry,
        (internet, internet.host(REGISTRY_HOST)),
        None,
        command=None,
        environment={"NATROUTE_REGISTRY_DEV": "true"},
    )
    world = World(lab, images, httpx.Client(timeout=3.0), internet, registry, {}, {})
    world.plan = topology_plan
    world.networks[INTERNET] = internet
    try:
        _start_beacons(world)
        _start_routers(world, router_env or {})
        world.demo_env = {
            f"{app_prefix}REGISTRY_URL": _wiring(world)["demo"]["NATROUTE_DEMO_REGISTRY_URL"],
            f"{app_prefix}REGISTRY_TOKEN": "dev",
            f"{app_prefix}INTERVAL": str(demo_interval),
            f"{app_prefix}REPORT_INTERVAL": str(report_interval),
            **(app_env or {}),
        }
        _wait_services(world, ready_timeout)
        for node_plan in topology_plan.nodes.values():
            _start_node(world, node_plan, sidecar_env or {}, app_command)
        _wait_nodes(world, ready_timeout)
    except BaseException:
        world.http.close()
        raise
    return world


def _start_beacons(world: World) -> None:
    lab, internet = world.lab, world.internet
    for name in BEACONS:
        world.beacons[name] = lab.node(
            name,
            world.images.beacon,
            (internet, world.beacon_ip(name)),
            None,
            command=None,
            environment={
                **_wiring(world)[name],
                "NATROUTE_BEACON_REGISTRY_TOKEN": "dev",
                "NATROUTE_BEACON_GOSSIP_INTERVAL": "2",  # [10 s]
                "NATROUTE_BEACON_REGISTER_INTERVAL": "5",  # [30 s]
                # A node that moved to another beacon yields its local entry to the
                # beacon now announcing it after this much silence (keepalives every 1 s).
                "NATROUTE_BEACON_HANDOFF_AFTER": str(BEACON_HANDOFF_AFTER),  # [60 s]
            },
        )


def _start_routers(world: World, router_env: Mapping[str, str]) -> None:
    """Every router of the plan, carriers first, on the networks the plan names."""
    lab = world.lab
    for name in world.plan.routers:
        world.networks[f"lan-{name}"] = lab.network(f"lan-{name}")
    for name, router_plan in world.plan.routers.items():
        spec = router_plan.spec
        env = {"NAT_HAIRPIN": spec.hairpin, **router_env}
        if router_plan.gateway is not None:
            env["NAT_WAN_GATEWAY"] = world.address(router_plan.gateway)
        if router_plan.public_host is not None:
            env["NAT_PUBLIC_HOST"] = world.address(router_plan.public_host)
        wan, lan = router_plan.wan, router_plan.lan
        world.routers[name] = lab.router(
            f"router-{name}",
            world.images.router,
            spec.preset,
            (world.networks[wan[0]], world.address(wan)),
            (world.networks[lan[0]], world.address(lan)),
            environment=env,
        )


def _wait_services(world: World, timeout: float) -> None:
    registry_url = f"http://{world.registry_ip}:{REGISTRY_PORT}/readyz"
    wait_for(partial(_answers, world.http, registry_url), "registry ready", timeout)
    for name in BEACONS:
        url = f"http://{world.beacon_ip(name)}:{BEACON_HTTP_PORT}/readyz"
        wait_for(partial(_answers, world.http, url), f"{name} ready", timeout)


def _start_node(
    world: World, node_plan: NodePlan, sidecar_env: Mapping[str, str], app: Sequence[str]
) -> None:
    name, router_name = node_plan.name, node_plan.router
    ip = world.address(node_plan.address)
    gateway = world.address(node_plan.gateway) if node_plan.gateway is not None else None
    env = {
        **_wiring(world)["sidecar"],
        **sidecar_env,
        "NATROUTE_SIDECAR_LISTEN": f"0.0.0.0:{node_plan.port}",
    }
    net = world.networks[node_plan.address[0]]
    sidecar = world.lab.node(
        name, world.images.sidecar, (net, ip), gateway, command=None, environment=env
    )
    demo = world.lab.attached(
        f"demo-{name}", world.images.sidecar, sidecar, command=list(app),
        environment=world.demo_env,
    )  # fmt: skip
    router = world.routers.get(router_name) if router_name is not None else None
    if router_name is None:
        kind, public_ip = "public", ip
    else:
        kind = world.plan.routers[router_name].spec.preset
        public_ip = world.routers[world.plan.outermost(router_name)].wan_ip
    world.nodes[name] = Node(
        name, kind, ip, sidecar, demo, router, public_ip=public_ip,
        nat_type=expected_nat_type(world.plan, router_name), port=node_plan.port,
    )  # fmt: skip


def _wait_nodes(world: World, timeout: float) -> None:
    for name, node in world.nodes.items():
        try:
            wait_for(partial(world.ready, name), f"{name} ready", timeout)
        except AssertionError as exc:
            logs = node.sidecar.logs(tail=40).decode("utf-8", "replace")
            raise LabError(f"{exc}\n{node.sidecar.name} log:\n{logs}") from exc
        node.node_id = int(world.status(name, peers=False)["node_id"])
