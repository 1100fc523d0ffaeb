"""The NAT matrix: one node of every kind, and the path each pair can take.

This module is data and pure functions (no Docker). ``MATRIX`` is the world
of the matrix scenario (``test_matrix.py``), of ``benchmarks/nat_matrix.py``
and of compose's ``nat-matrix`` profile. :func:`expected_path` says, for an
ordered pair of nodes, whether the NATs between them physically allow a
direct UDP path and why; docs/e2e.md ("The NAT matrix") shows the same table,
rendered by :func:`kind_table` (a test keeps the two equal).

The reasoning, in RFC 4787 terms. A direct path needs each side's datagrams
to pass the other side's filter at an endpoint the sender can know:

- endpoint-independent mappings on both sides: each side learns the other's
  public endpoint from a beacon, both send at once, each send opens the
  sender's own filter for the other (a hole punch);
- an address-and-port-dependent ("symmetric") mapping gives a fresh public
  port towards the peer that nobody can know beforehand. The peer can still
  answer it when its own filter lets the first datagram from that port in
  (no filter, endpoint-independent, or address-dependent after it sent
  anything to that address) and it replies to the source it saw: that source
  is a peer-reflexive candidate (ICE). A peer whose filter is port-dependent
  drops it, and only port prediction could help;
- two nodes behind one router reach each other over their LAN addresses
  (host candidates) whatever the router does;
- NATs in a row (carrier-grade NAT) compose: the mapping is endpoint-
  dependent if any of them is, the filter is the strictest of them;
- a UDP-blocked node has no UDP path at all; only a relay over TCP reaches it.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from .topology import Plan, RouterSpec, Topology, plan

__all__ = [
    "KINDS",
    "MATRIX",
    "MATRIX_KINDS",
    "MATRIX_PLAN",
    "PREDICTABLE",
    "Behaviour",
    "Filtering",
    "MappingKind",
    "Path",
    "PathExpectation",
    "behaviour",
    "expected_between",
    "expected_path",
    "kind_table",
    "ordered_pairs",
]


class MappingKind(Enum):
    """How a NAT maps one internal endpoint (RFC 4787 section 4.1)."""

    NONE = "none"  # no translation seen from outside
    ENDPOINT_INDEPENDENT = "endpoint-independent"
    ADDRESS_AND_PORT_DEPENDENT = "address-and-port-dependent"


class Filtering(Enum):
    """Which inbound datagrams reach a mapping (RFC 4787 section 5), loosest first."""

    NONE = "none"
    ENDPOINT_INDEPENDENT = "endpoint-independent"
    ADDRESS_DEPENDENT = "address-dependent"
    ADDRESS_AND_PORT_DEPENDENT = "address-and-port-dependent"


class Path(Enum):
    """Where a pair's datagrams can go."""

    DIRECT = "direct"  # UDP between the nodes' own endpoints
    RELAY = "relay"  # UDP through a beacon
    STREAM_RELAY = "stream-relay"  # TCP (WebSocket) through a beacon


@dataclass(frozen=True)
class Behaviour:
    """What the NATs between a node and the internet do, composed."""

    mapping: MappingKind
    filtering: Filtering
    udp: bool = True


#: Each router preset's own behaviour (docker/README.md, "NAT presets").
PRESET_BEHAVIOUR = {
    "public": Behaviour(MappingKind.NONE, Filtering.NONE),
    "full-cone": Behaviour(MappingKind.ENDPOINT_INDEPENDENT, Filtering.ENDPOINT_INDEPENDENT),
    "address-restricted": Behaviour(MappingKind.ENDPOINT_INDEPENDENT, Filtering.ADDRESS_DEPENDENT),
    "port-restricted": Behaviour(
        MappingKind.ENDPOINT_INDEPENDENT, Filtering.ADDRESS_AND_PORT_DEPENDENT
    ),
    "symmetric": Behaviour(
        MappingKind.ADDRESS_AND_PORT_DEPENDENT, Filtering.ADDRESS_AND_PORT_DEPENDENT
    ),
    "udp-blocked": Behaviour(MappingKind.ENDPOINT_INDEPENDENT, Filtering.NONE, udp=False),
}
#: Why a pair stays on the relay that only port prediction can make direct
#: (``expected_path``'s reason; the matrix benchmark counts these pairs).
PREDICTABLE = "endpoint-dependent mapping vs port-dependent filter"

_MAPPINGS = list(MappingKind)
_FILTERS = list(Filtering)


def behaviour(topology_plan: Plan, router: str | None) -> Behaviour:
    """The composed behaviour of the NATs between a node behind ``router`` and the internet."""
    result = Behaviour(MappingKind.NONE, Filtering.NONE)
    while router is not None:
        spec = topology_plan.routers[router].spec
        own = PRESET_BEHAVIOUR[spec.canonical]
        result = Behaviour(
            max(result.mapping, own.mapping, key=_MAPPINGS.index),
            max(result.filtering, own.filtering, key=_FILTERS.index),
            result.udp and own.udp,
        )
        router = spec.behind
    return result


@dataclass(frozen=True)
class PathExpectation:
    """The path a pair can settle on, and why."""

    direct_possible: bool
    path: Path
    reason: str


def _admits_new_port(b: Behaviour) -> bool:
    return b.filtering is not Filtering.ADDRESS_AND_PORT_DEPENDENT


def expected_path(topology_plan: Plan, a: str, b: str) -> PathExpectation:
    """Whether nodes ``a`` and ``b`` of a plan can reach each other directly, and why."""
    node_a, node_b = topology_plan.nodes[a], topology_plan.nodes[b]
    same_lan = node_a.router is not None and node_a.router == node_b.router
    return expected_between(
        behaviour(topology_plan, node_a.router), behaviour(topology_plan, node_b.router), same_lan
    )


def expected_between(nat_a: Behaviour, nat_b: Behaviour, same_lan: bool) -> PathExpectation:
    """The path two nodes behind ``nat_a`` and ``nat_b`` can settle on (see the docstring)."""
    if not (nat_a.udp and nat_b.udp):
        return PathExpectation(False, Path.STREAM_RELAY, "udp-blocked: no UDP path, TCP relay")
    if same_lan:
        return PathExpectation(True, Path.DIRECT, "same LAN: host candidates")
    dependent_a = nat_a.mapping is MappingKind.ADDRESS_AND_PORT_DEPENDENT
    dependent_b = nat_b.mapping is MappingKind.ADDRESS_AND_PORT_DEPENDENT
    if dependent_a and dependent_b:
        return PathExpectation(False, Path.RELAY, "both mappings endpoint-dependent")
    if dependent_a or dependent_b:
        other = nat_b if dependent_a else nat_a
        if _admits_new_port(other):
            return PathExpectation(True, Path.DIRECT, "peer-reflexive: filter admits the new port")
        return PathExpectation(False, Path.RELAY, PREDICTABLE)
    return PathExpectation(True, Path.DIRECT, "hole punch: both mappings endpoint-independent")


def ordered_pairs(topology_plan: Plan) -> list[tuple[str, str]]:
    """Every ordered pair of distinct nodes."""
    return list(itertools.permutations(topology_plan.nodes, 2))


#: The matrix world (compose: the default services plus the ``nat-matrix`` profile,
#: in the same order, so that the address plans agree).
MATRIX = Topology.of(
    {
        "cone-a": RouterSpec("port-restricted"),
        "cone-b": RouterSpec("port-restricted"),
        "symmetric": RouterSpec("symmetric"),
        "full-cone": RouterSpec("full-cone"),
        "address-restricted": RouterSpec("address-restricted"),
        "udp-blocked": RouterSpec("udp-blocked"),
        "public": RouterSpec("public"),
        "shared": RouterSpec("port-restricted"),
        "carrier-pr": RouterSpec("port-restricted"),
        "home-pr": RouterSpec("port-restricted", behind="carrier-pr"),
        "carrier-sym": RouterSpec("symmetric"),
        "home-sym": RouterSpec("port-restricted", behind="carrier-sym"),
    },
    [
        ("cone-a", "cone-a"),
        ("cone-b", "cone-b"),
        ("symmetric", "symmetric"),
        ("public", None),
        ("full-cone", "full-cone"),
        ("address-restricted", "address-restricted"),
        ("udp-blocked", "udp-blocked"),
        ("public-nat", "public"),
        ("shared-1", "shared"),
        ("shared-2", "shared"),
        ("cgn-pr", "home-pr"),
        ("cgn-sym", "home-sym"),
    ],
)
MATRIX_PLAN = plan(MATRIX)

#: Node -> its kind in the docs' table.
MATRIX_KINDS: Mapping[str, str] = {
    "cone-a": "port-restricted",
    "cone-b": "port-restricted",
    "symmetric": "symmetric",
    "public": "public",
    "full-cone": "full-cone",
    "address-restricted": "address-restricted",
    "udp-blocked": "udp-blocked",
    "public-nat": "public",
    "shared-1": "same LAN",
    "shared-2": "same LAN",
    "cgn-pr": "CGN pr/pr",
    "cgn-sym": "CGN pr/sym",
}
#: The kinds of the table, in order, each with the NATs of a node of that kind.
KINDS: Mapping[str, Behaviour] = {
    kind: behaviour(MATRIX_PLAN, MATRIX_PLAN.nodes[node].router)
    for kind, node in (
        ("public", "public"),
        ("full-cone", "full-cone"),
        ("address-restricted", "address-restricted"),
        ("port-restricted", "cone-a"),
        ("symmetric", "symmetric"),
        ("udp-blocked", "udp-blocked"),
        ("same LAN", "shared-1"),
        ("CGN pr/pr", "cgn-pr"),
        ("CGN pr/sym", "cgn-sym"),
    )
}
_CELL = {Path.DIRECT: "D", Path.RELAY: "R", Path.STREAM_RELAY: "T"}


def kind_table() -> str:
    """The expected-path table by kind, as Markdown (docs/e2e.md shows it).

    D: direct possible, R: relay through a beacon, T: relay over TCP only. Two
    "same LAN" nodes share one router; a "same LAN" node against any other
    kind is a node behind a port-restricted router.
    """
    names = list(KINDS)
    lines = ["| from \\ to | " + " | ".join(names) + " |", "|" + " --- |" * (len(names) + 1)]
    for row in names:
        cells = []
        for column in names:
            same_lan = row == column == "same LAN"
            cells.append(_CELL[expected_between(KINDS[row], KINDS[column], same_lan).path])
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
