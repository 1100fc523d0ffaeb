"""The lab's worlds as data: routers, nodes, and where each one sits.

A :class:`Topology` names NAT routers (a preset, the carrier router it sits
behind for carrier-grade NAT, hairpinning) and nodes (behind a router, or on
the internet). :func:`plan` turns it into an address plan that holds no
concrete subnet: every address is a network name and a host index, so the
SDK harness (``world.py``, subnets picked at run time) and ``compose.yaml``
(fixed subnets) place everything the same way, and ``test_compose.py``
checks that they do.

The plan (docs/e2e.md, "Addresses"):

- ``internet``: routers .2-.9, then .30-.99; registry .10; beacon-a .11,
  beacon-b .12; nodes on the internet .20-.29.
- ``lan-R`` for each router R: R is .2 and its nodes .10, .11, ...; when
  routers sit behind R (R is a carrier), they are .3, .4, ... on R's LAN,
  with R as their gateway.
- The k-th node of a network listens on UDP port 4000 + k - 1, and a
  ``public`` router's LAN host (``NAT_PUBLIC_HOST``) is its first node.

Nothing here touches Docker.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = [
    "BEACONS",
    "BEACON_HOSTS",
    "INTERNET",
    "NODE_PORT",
    "PRESETS",
    "PRESET_ALIASES",
    "REGISTRY_HOST",
    "NodePlan",
    "Plan",
    "RouterPlan",
    "RouterSpec",
    "Topology",
    "canonical_preset",
    "lan_of",
    "plan",
]

#: The router image's NAT_MODE presets (docker/README.md has their table).
PRESETS = (
    "public",
    "full-cone",
    "address-restricted",
    "port-restricted",
    "symmetric",
    "udp-blocked",
)
#: Older names the router image still accepts.
PRESET_ALIASES = {"cone": "port-restricted"}
INTERNET = "internet"
REGISTRY_HOST = 10
BEACONS = ("beacon-a", "beacon-b")
BEACON_HOSTS = {"beacon-a": 11, "beacon-b": 12}
#: Host indices of routers on the internet, in order.
ROUTER_HOSTS = (*range(2, 10), *range(30, 100))
PUBLIC_NODE_HOSTS = tuple(range(20, 30))
LAN_ROUTER_HOST = 2
LAN_NODE_FIRST = 10
NODE_PORT = 4000


def canonical_preset(preset: str) -> str:
    """The preset's own name (``cone`` is ``port-restricted``).

    Raises:
        ValueError: not a preset of the router image.
    """
    name = PRESET_ALIASES.get(preset, preset)
    if name not in PRESETS:
        raise ValueError(f"unknown NAT preset {preset!r}; one of {PRESETS}")
    return name


def lan_of(router: str) -> str:
    """The name of a router's LAN network."""
    return f"lan-{router}"


@dataclass(frozen=True)
class RouterSpec:
    """One NAT router.

    Attributes:
        preset: its ``NAT_MODE`` (an alias is kept as written: it is what the
            router is told).
        behind: the carrier router whose LAN is this router's WAN (carrier-grade
            NAT), or None for a router on the internet.
        hairpin: its ``NAT_HAIRPIN`` (``reject``, ``drop`` or ``on``).
    """

    preset: str = "port-restricted"
    behind: str | None = None
    hairpin: str = "reject"

    @property
    def canonical(self) -> str:
        """The preset's own name."""
        return canonical_preset(self.preset)


@dataclass(frozen=True)
class Topology:
    """Routers (in creation order) and nodes (name, router or None)."""

    routers: Mapping[str, RouterSpec]
    nodes: Sequence[tuple[str, str | None]]

    @classmethod
    def of(
        cls, routers: Mapping[str, str | RouterSpec], nodes: Sequence[tuple[str, str | None]]
    ) -> Topology:
        """A topology from router presets or specs."""
        specs = {n: r if isinstance(r, RouterSpec) else RouterSpec(r) for n, r in routers.items()}
        return cls(specs, tuple(nodes))


@dataclass(frozen=True)
class RouterPlan:
    """Where a router sits: (network, host index) of its legs, its gateway."""

    name: str
    spec: RouterSpec
    wan: tuple[str, int]
    lan: tuple[str, int]
    gateway: tuple[str, int] | None
    public_host: tuple[str, int] | None


@dataclass(frozen=True)
class NodePlan:
    """Where a node sits, its UDP port and its gateway (None: on the internet)."""

    name: str
    router: str | None
    address: tuple[str, int]
    port: int
    gateway: tuple[str, int] | None


@dataclass(frozen=True)
class Plan:
    """The address plan of a topology (see the module docstring)."""

    routers: dict[str, RouterPlan] = field(default_factory=dict)
    nodes: dict[str, NodePlan] = field(default_factory=dict)

    @property
    def networks(self) -> list[str]:
        """Every network: the internet and one LAN per router."""
        return [INTERNET, *(lan_of(name) for name in self.routers)]

    def outermost(self, router: str) -> str:
        """The router whose WAN is the internet, following ``behind`` up."""
        while (behind := self.routers[router].spec.behind) is not None:
            router = behind
        return router


def plan(topology: Topology) -> Plan:
    """Place every router and node of ``topology``.

    Raises:
        ValueError: an unknown preset or hairpin setting, a router behind an
            unknown or later router, a node behind an unknown router, or more
            routers or public nodes than the plan has addresses for.
    """
    result = Plan()
    top = iter(ROUTER_HOSTS)
    on_lan: dict[str, int] = {}  # routers placed behind each carrier so far
    for name, spec in topology.routers.items():
        spec.canonical  # noqa: B018 - validates the preset
        if spec.hairpin not in ("reject", "drop", "on"):
            raise ValueError(f"{name}: unknown hairpin {spec.hairpin!r}")
        if spec.behind is None:
            wan: tuple[str, int] = (INTERNET, _next(top, "routers on the internet"))
            gateway = None
        elif spec.behind in result.routers:
            carrier = lan_of(spec.behind)
            on_lan[spec.behind] = on_lan.get(spec.behind, 0) + 1
            wan, gateway = (carrier, LAN_ROUTER_HOST + on_lan[spec.behind]), (carrier, 2)
        else:
            raise ValueError(f"{name} sits behind {spec.behind!r}, which is not an earlier router")
        public_host = (lan_of(name), LAN_NODE_FIRST) if spec.canonical == "public" else None
        lan = (lan_of(name), LAN_ROUTER_HOST)
        result.routers[name] = RouterPlan(name, spec, wan, lan, gateway, public_host)
    per_network: dict[str | None, int] = {}
    for name, router in topology.nodes:
        index = per_network[router] = per_network.get(router, 0) + 1
        port = NODE_PORT + index - 1
        if router is None:
            if index > len(PUBLIC_NODE_HOSTS):
                raise ValueError("more nodes on the internet than the plan has addresses for")
            address: tuple[str, int] = (INTERNET, PUBLIC_NODE_HOSTS[index - 1])
            node_gateway = None
        elif router in result.routers:
            address = (lan_of(router), LAN_NODE_FIRST + index - 1)
            node_gateway = (lan_of(router), LAN_ROUTER_HOST)
        else:
            raise ValueError(f"node {name} sits behind unknown router {router!r}")
        result.nodes[name] = NodePlan(name, router, address, port, node_gateway)
    return result


def _next(hosts: Iterator[int], what: str) -> int:
    try:
        return next(hosts)
    except StopIteration:
        raise ValueError(f"more {what} than the plan has addresses for") from None
