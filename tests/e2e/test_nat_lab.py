"""The NAT lab itself: every router preset maps, filters and hairpins as it claims,
and the internet between the routers is faithful (no path around them).

One lab for the module, placed by ``topology.plan``: beacon-a (:9001) and
beacon-b (:9001 and :9002: one host, two ports) and a ``sink`` host on the
internet, and plain nodes (no sidecar) behind routers of every preset, a
router with hairpinning on, two carrier-grade NATs (a port-restricted home
router behind a port-restricted and behind a symmetric carrier router). The
beacons are real ``natroute-beacon`` services: they answer Discover with the
source they observed, so a node learns the public endpoint its NATs give it.
Every behaviour is observed with raw datagrams (``scripts/probe.py``), never
assumed: ports seen by the beacons, datagrams that arrive or not, and the
source addresses receivers see.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import docker
import pytest

from .engine import Images
from .lab import Lab, LabNetwork, Router
from .matrix import behaviour, expected_between
from .topology import INTERNET, Plan, RouterSpec, Topology, lan_of, plan

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]

LAB = Topology.of(
    {
        "public": RouterSpec("public"),
        "full-cone": RouterSpec("full-cone"),
        "address-restricted": RouterSpec("address-restricted"),
        "port-restricted": RouterSpec("port-restricted"),
        "cone": RouterSpec("cone"),  # the old name of port-restricted
        "hairpin": RouterSpec("port-restricted", hairpin="on"),
        "symmetric": RouterSpec("symmetric"),
        "udp-blocked": RouterSpec("udp-blocked"),
        "carrier-pr": RouterSpec("port-restricted"),
        "home-pr": RouterSpec("port-restricted", behind="carrier-pr"),
        "carrier-sym": RouterSpec("symmetric"),
        "home-sym": RouterSpec("port-restricted", behind="carrier-sym"),
    },
    [
        ("sink", None),
        ("public", "public"),
        ("full-cone", "full-cone"),
        ("address-restricted", "address-restricted"),
        ("port-restricted", "port-restricted"),
        ("port-restricted-2", "port-restricted"),
        ("stray", "port-restricted"),
        ("cone", "cone"),
        ("hairpin", "hairpin"),
        ("hairpin-2", "hairpin"),
        ("symmetric", "symmetric"),
        ("udp-blocked", "udp-blocked"),
        ("cgn-pr", "home-pr"),
        ("cgn-sym", "home-sym"),
    ],
)
BEACON_A, BEACON_B = 10, 11  # internet host indices (no registry in this lab)
SINK_PORT = 7000
#: Node -> (one public port for every destination, unsolicited datagrams that
#: arrive from (the contacted address, another port), from another address).
PRESETS = {
    "public": (True, True, True),
    "full-cone": (True, True, True),
    "address-restricted": (True, True, False),
    "port-restricted": (True, False, False),
    "cone": (True, False, False),
    "symmetric": (False, False, False),
    "cgn-pr": (True, False, False),
    "cgn-sym": (False, False, False),
}


@dataclass
class NatLab:
    """The module's lab and what the tests address."""

    lab: Lab
    plan: Plan
    networks: dict[str, LabNetwork]
    routers: dict[str, Router]
    nodes: dict[str, Any]
    beacon_a: Any
    beacon_b: Any

    def ip(self, where: tuple[str, int]) -> str:
        """The address of a plan entry."""
        return self.networks[where[0]].host(where[1])

    @property
    def beacon_a_ip(self) -> str:
        """Beacon A's address."""
        return self.networks[INTERNET].host(BEACON_A)

    @property
    def beacon_b_ip(self) -> str:
        """Beacon B's address."""
        return self.networks[INTERNET].host(BEACON_B)

    @property
    def destinations(self) -> list[str]:
        """Beacon A, and beacon B on two ports (same host, another port)."""
        return [f"{self.beacon_a_ip}:9001", f"{self.beacon_b_ip}:9001", f"{self.beacon_b_ip}:9002"]

    def public_ip(self, node: str) -> str:
        """The address a node's datagrams reach the internet with."""
        router = self.plan.nodes[node].router
        if router is None:
            return self.ip(self.plan.nodes[node].address)
        return self.routers[self.plan.outermost(router)].wan_ip

    def probe(self, node: str, *args: str, timeout: float = 20.0) -> dict[str, Any]:
        """Run ``scripts/probe.py ARGS`` in a node; its last JSON line."""
        return self.lab.run_script(self.nodes[node], "probe", *args, timeout=timeout)

    def background(self, node: str, *args: str) -> str:
        """Start ``scripts/probe.py ARGS`` in a node; the file its lines go to."""
        output = f"/tmp/probe-{uuid.uuid4().hex[:8]}.jsonl"
        self.lab.start_script(self.nodes[node], "probe", *args, output=output)
        return output

    def lines(self, node: str, output: str, count: int) -> list[dict[str, Any]]:
        """The first ``count`` JSON lines of a background probe."""
        return self.lab.wait_json_lines(self.nodes[node], output, count, timeout=15)


@pytest.fixture(scope="module")
def nat_lab(docker_client: docker.DockerClient, images: Images) -> Iterator[NatLab]:
    lab_plan = plan(LAB)
    with Lab(docker_client) as lab:
        networks = {name: lab.network(name) for name in lab_plan.networks}
        internet = networks[INTERNET]
        beacon_a = lab.node(
            "beacon-a", images.beacon, (internet, internet.host(BEACON_A)), None, command=None
        )
        beacon_b = lab.node(
            "beacon-b", images.beacon, (internet, internet.host(BEACON_B)), None, command=None
        )
        built = NatLab(lab, lab_plan, networks, {}, {}, beacon_a, beacon_b)
        for name, router_plan in lab_plan.routers.items():
            env = {"NAT_HAIRPIN": router_plan.spec.hairpin}
            if router_plan.gateway is not None:
                env["NAT_WAN_GATEWAY"] = built.ip(router_plan.gateway)
            if router_plan.public_host is not None:
                env["NAT_PUBLIC_HOST"] = built.ip(router_plan.public_host)
            built.routers[name] = lab.router(
                f"router-{name}",
                images.router,
                router_plan.spec.preset,
                (networks[router_plan.wan[0]], built.ip(router_plan.wan)),
                (networks[router_plan.lan[0]], built.ip(router_plan.lan)),
                environment=env,
            )
        for name, node_plan in lab_plan.nodes.items():
            gateway = built.ip(node_plan.gateway) if node_plan.gateway is not None else None
            net = networks[node_plan.address[0]]
            built.nodes[name] = lab.node(
                f"node-{name}", images.runtime, (net, built.ip(node_plan.address)), gateway
            )
        # A second beacon process on beacon-b: one host, two ports.
        beacon_b.exec_run(
            ["natroute-beacon", "--listen", "0.0.0.0:9002", "--http-listen", "127.0.0.1:8002"],
            user="natroute",
            detach=True,
        )
        lab.wait_http(beacon_a, "http://127.0.0.1:8001/readyz")
        lab.wait_http(beacon_b, "http://127.0.0.1:8001/readyz")
        lab.wait_http(beacon_b, "http://127.0.0.1:8002/readyz")
        yield built


# --- mapping and filtering of every preset ------------------------------------------


@pytest.mark.parametrize("node", list(PRESETS))
def test_mapping_one_socket_to_three_destinations(nat_lab: NatLab, node: str) -> None:
    independent = PRESETS[node][0]

    result = nat_lab.probe(node, "discover", "--port", "5000", *nat_lab.destinations)

    observed = result["observed"]
    ports = {port for _, port in observed}
    print(f"\n{node}: local 5000 -> {observed}")
    assert len(observed) == 3, result
    assert {ip for ip, _ in observed} == {nat_lab.public_ip(node)}, result
    if independent:
        assert len(ports) == 1, result
    else:
        assert len(ports) == 3, result
    if node in ("public", "full-cone", "address-restricted", "port-restricted", "cone"):
        assert ports == {5000}, result  # a single NAT keeps a free port


def _unsolicited(nat_lab: NatLab, node: str, sender: Any) -> list[list[Any]]:
    """What reaches ``node`` from ``sender``'s host after it discovered via beacon A."""
    output = nat_lab.background(node, "listen", nat_lab.destinations[0], "1.5")
    (first,) = nat_lab.lines(node, output, 1)
    ip, port = first["observed"]
    sent = nat_lab.lab.run_script(sender, "probe", "send", f"{ip}:{port}", "3")
    assert sent == {"sent": 3}
    _, rest = nat_lab.lines(node, output, 2)
    received: list[list[Any]] = rest["received"]
    return received


@pytest.mark.parametrize("node", list(PRESETS))
def test_filtering_of_unsolicited_datagrams(nat_lab: NatLab, node: str) -> None:
    _, same_address, other_address = PRESETS[node]

    from_a = _unsolicited(nat_lab, node, nat_lab.beacon_a)  # beacon A's host, another port
    from_b = _unsolicited(nat_lab, node, nat_lab.beacon_b)  # another address

    print(f"\n{node}: from A's address {from_a}; from B's {from_b}")
    assert bool(from_a) is same_address, from_a
    assert bool(from_b) is other_address, from_b
    # What gets in keeps its sender's address (never a Docker bridge's).
    assert {src for src, _, _ in from_a} <= {nat_lab.beacon_a_ip}
    assert {src for src, _, _ in from_b} <= {nat_lab.beacon_b_ip}


def test_udp_blocked_router_passes_no_udp_but_tcp(nat_lab: NatLab) -> None:
    discover = nat_lab.probe("udp-blocked", "discover", *nat_lab.destinations[:1])
    tcp = nat_lab.probe("udp-blocked", "tcp", f"{nat_lab.beacon_a_ip}:8001")

    assert "DiscoveryError" in discover.get("error", ""), discover
    assert tcp["connected"] is True, tcp


def test_two_hosts_on_one_port_get_two_public_ports_each_endpoint_independent(
    nat_lab: NatLab,
) -> None:
    first = nat_lab.probe("port-restricted", "discover", "--port", "5100", *nat_lab.destinations)
    second = nat_lab.probe("port-restricted-2", "discover", "--port", "5100", *nat_lab.destinations)

    ports_first = {port for _, port in first["observed"]}
    ports_second = {port for _, port in second["observed"]}
    print(f"\ntwo hosts, local port 5100: {ports_first} and {ports_second}")
    assert len(ports_first) == 1, first
    assert len(ports_second) == 1, second
    assert ports_first != ports_second


# --- hairpinning ---------------------------------------------------------------------


def _hairpin(nat_lab: NatLab, receiver: str, sender: str) -> list[list[Any]]:
    """``sender`` sends to ``receiver``'s public endpoint from its own mapped socket."""
    output = nat_lab.background(receiver, "listen", nat_lab.destinations[0], "1.5")
    (first,) = nat_lab.lines(receiver, output, 1)
    ip, port = first["observed"]
    mapped = nat_lab.probe(sender, "discover", "--port", "5200", nat_lab.destinations[0])
    sent = nat_lab.probe(sender, "send", "--port", "5200", f"{ip}:{port}", "3")
    assert sent == {"sent": 3}, sent
    _, rest = nat_lab.lines(receiver, output, 2)
    received: list[list[Any]] = rest["received"]
    sender_ip, sender_port = mapped["observed"][0]
    assert {(src, src_port) for src, src_port, _ in received} <= {(sender_ip, sender_port)}
    return received


def test_hairpin_on_delivers_with_the_senders_public_endpoint(nat_lab: NatLab) -> None:
    received = _hairpin(nat_lab, "hairpin", "hairpin-2")

    print(f"\nhairpin on: {received}")
    assert received, "no hairpinned datagram arrived"


def test_hairpin_off_delivers_nothing(nat_lab: NatLab) -> None:
    assert _hairpin(nat_lab, "port-restricted", "port-restricted-2") == []


# --- direct paths between kinds: the matrix table, checked with raw punches ----------


def _punch(nat_lab: NatLab, a: str, b: str) -> tuple[list[list[Any]], list[list[Any]]]:
    """A and B punch towards each other's beacon-observed endpoints, learning
    peer-reflexive endpoints of the peer's address as they arrive.

    Returns:
        What A received and what B received.
    """
    run = uuid.uuid4().hex[:8]
    beacon, observed, outputs = nat_lab.destinations[0], {}, {}
    for name in (a, b):
        outputs[name] = nat_lab.background(name, "punch", beacon, f"/tmp/peer-{run}", "2")
    for name in (a, b):
        (first,) = nat_lab.lines(name, outputs[name], 1)
        observed[name] = "{}:{}".format(*first["observed"])
    for name, peer in ((a, b), (b, a)):
        write = ["sh", "-c", 'printf %s "$1" >"$0"', f"/tmp/peer-{run}", observed[peer]]
        code, out = nat_lab.lab.exec(nat_lab.nodes[name], write, user="natroute")
        assert code == 0, out
    results = [nat_lab.lines(name, outputs[name], 2)[1] for name in (a, b)]
    return results[0]["received"], results[1]["received"]


PUNCHES = [
    ("port-restricted", "cone"),
    ("symmetric", "public"),
    ("symmetric", "full-cone"),
    ("symmetric", "address-restricted"),
    ("symmetric", "port-restricted"),
    ("symmetric", "cgn-sym"),
    ("cgn-pr", "port-restricted"),
    ("cgn-pr", "cgn-sym"),
]


@pytest.mark.parametrize(("a", "b"), PUNCHES)
def test_raw_punch_succeeds_exactly_where_the_matrix_expects_direct(
    nat_lab: NatLab, a: str, b: str
) -> None:
    lab_plan = nat_lab.plan
    routers = lab_plan.nodes[a].router, lab_plan.nodes[b].router
    expected = expected_between(
        behaviour(lab_plan, routers[0]), behaviour(lab_plan, routers[1]), same_lan=False
    )

    to_a, to_b = _punch(nat_lab, a, b)

    print(f"\n{a} <-> {b}: {len(to_a)} and {len(to_b)} datagrams; expected {expected}")
    assert bool(to_a) is expected.direct_possible, (to_a, expected)
    assert bool(to_b) is expected.direct_possible, (to_b, expected)
    assert {src for src, _, _ in to_a} <= {nat_lab.public_ip(b)}
    assert {src for src, _, _ in to_b} <= {nat_lab.public_ip(a)}


# --- a faithful internet: no path between lab networks but through the routers ------


def test_an_unsolicited_datagram_arrives_with_its_senders_public_address(
    nat_lab: NatLab,
) -> None:
    # Through the full-cone router's DNAT, into a LAN, before the receiver ever sent to
    # the sender: a host that masqueraded bridged traffic rewrote this to the LAN
    # bridge's .1 address.
    received = _unsolicited(nat_lab, "full-cone", nat_lab.nodes["port-restricted-2"])

    assert received
    assert {src for src, _, _ in received} == {nat_lab.routers["port-restricted"].wan_ip}


def _sink(nat_lab: NatLab, seconds: float) -> str:
    output = nat_lab.background("sink", "sink", str(SINK_PORT), str(seconds))
    nat_lab.lines("sink", output, 1)
    return output


def _sink_received(nat_lab: NatLab, output: str) -> list[list[Any]]:
    received: list[list[Any]] = nat_lab.lines("sink", output, 2)[1]["received"]
    return received


def test_the_host_does_not_route_between_lab_networks(nat_lab: NatLab) -> None:
    stray = nat_lab.nodes["stray"]
    lan = nat_lab.networks[lan_of("port-restricted")]
    sink = f"{nat_lab.ip(nat_lab.plan.nodes['sink'].address)}:{SINK_PORT}"
    output = _sink(nat_lab, 4)
    via_host = ["ip", "route", "replace", "default", "via", lan.host(1)]
    try:  # the node takes the Docker host (its LAN bridge's .1) as its gateway
        code, out = nat_lab.lab.exec(stray, via_host)
        assert code == 0, out
        sent = nat_lab.probe("stray", "send", sink, "3")
        tcp = nat_lab.probe("stray", "tcp", f"{nat_lab.beacon_a_ip}:8001")
    finally:
        gateway = nat_lab.routers["port-restricted"].lan_ip
        code, out = nat_lab.lab.exec(stray, ["ip", "route", "replace", "default", "via", gateway])
    assert code == 0, out
    through_router = nat_lab.probe("stray", "send", sink, "3")

    received = _sink_received(nat_lab, output)
    assert sent == through_router == {"sent": 3}
    assert tcp["connected"] is False, tcp
    assert {src for src, _, _ in received} == {nat_lab.routers["port-restricted"].wan_ip}
    assert len(received) == 3, received  # only the datagrams sent through the router


def test_a_partitioned_router_lets_nothing_out_and_the_internet_sees_only_router_addresses(
    nat_lab: NatLab,
) -> None:
    router = nat_lab.routers["cone"].container
    sink = f"{nat_lab.ip(nat_lab.plan.nodes['sink'].address)}:{SINK_PORT}"
    senders = list(PRESETS)  # one node behind every preset, the CGNs included
    output = _sink(nat_lab, 6)
    try:
        code, out = nat_lab.lab.exec(router, ["nat-ctl", "partition", "on"])
        assert code == 0, out
        cut = nat_lab.probe("cone", "discover", nat_lab.destinations[0])
        nat_lab.probe("cone", "send", "--port", "5300", sink, "3")
    finally:
        code, out = nat_lab.lab.exec(router, ["nat-ctl", "partition", "off"])
    assert code == 0, out
    for name in senders:
        assert nat_lab.probe(name, "send", "--port", "5301", sink, "1") == {"sent": 1}

    received = _sink_received(nat_lab, output)
    sources = {src for src, _, _ in received}
    assert "DiscoveryError" in cut.get("error", ""), cut
    assert (nat_lab.routers["cone"].wan_ip, 5300) not in {(s, p) for s, p, _ in received}
    assert sources == {nat_lab.public_ip(name) for name in senders}, received


def test_partition_drops_udp_to_one_peer_until_it_heals(nat_lab: NatLab) -> None:
    router = nat_lab.routers["cone"].container
    a, b = nat_lab.destinations[0], nat_lab.destinations[1]
    try:
        code, out = nat_lab.lab.exec(router, ["nat-ctl", "partition", "on", nat_lab.beacon_a_ip])
        assert code == 0, out
        cut = nat_lab.probe("cone", "discover", a)
        other = nat_lab.probe("cone", "discover", b)
    finally:
        code, out = nat_lab.lab.exec(router, ["nat-ctl", "partition", "off", nat_lab.beacon_a_ip])
    assert code == 0, out
    healed = nat_lab.probe("cone", "discover", a)

    wan = nat_lab.routers["cone"].wan_ip
    assert "DiscoveryError" in cut.get("error", ""), cut
    assert other["observed"][0][0] == wan, other
    assert healed["observed"][0][0] == wan, healed


def test_every_router_reports_healthy(nat_lab: NatLab) -> None:
    for name, router in nat_lab.routers.items():
        code, out = nat_lab.lab.exec(router.container, ["nat-ctl", "health"])
        assert code == 0, f"{name}: {out}"
