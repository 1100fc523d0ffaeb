"""The address plan and the NAT matrix's expected paths, without an engine.

These run in every test run (no ``docker`` marker): the plan is what compose
and the harness share, and docs/e2e.md shows the matrix table this module
renders.
"""

from __future__ import annotations

import pytest

from .engine import REPO_ROOT
from .matrix import (
    KINDS,
    MATRIX_KINDS,
    MATRIX_PLAN,
    Behaviour,
    Filtering,
    MappingKind,
    Path,
    behaviour,
    expected_between,
    expected_path,
    kind_table,
    ordered_pairs,
)
from .topology import RouterSpec, Topology, canonical_preset, plan


def test_plan_places_routers_nodes_and_carriers() -> None:
    placed = plan(
        Topology.of(
            {"a": "cone", "carrier": "symmetric", "home": RouterSpec(behind="carrier")},
            [("n1", "a"), ("n2", "a"), ("p", None), ("h", "home")],
        )
    )

    assert placed.routers["a"].wan == ("internet", 2)
    assert placed.routers["carrier"].wan == ("internet", 3)
    assert placed.routers["home"].wan == ("lan-carrier", 3)
    assert placed.routers["home"].gateway == ("lan-carrier", 2)
    assert placed.nodes["n2"].address == ("lan-a", 11)
    assert placed.nodes["n2"].port == 4001
    assert placed.nodes["n2"].gateway == ("lan-a", 2)
    assert placed.nodes["p"].address == ("internet", 20)
    assert placed.nodes["p"].gateway is None
    assert placed.outermost("home") == "carrier"
    assert placed.networks == ["internet", "lan-a", "lan-carrier", "lan-home"]


def test_plan_skips_the_services_addresses_for_many_routers() -> None:
    placed = plan(Topology.of({f"r{i}": "cone" for i in range(10)}, []))

    hosts = [r.wan[1] for r in placed.routers.values()]
    assert hosts == [2, 3, 4, 5, 6, 7, 8, 9, 30, 31]


@pytest.mark.parametrize(
    ("routers", "nodes", "message"),
    [
        ({"a": "bogus"}, [], "unknown NAT preset"),
        ({"a": RouterSpec(hairpin="sometimes")}, [], "unknown hairpin"),
        ({"a": RouterSpec(behind="b"), "b": "cone"}, [], "not an earlier router"),
        ({}, [("n", "nowhere")], "unknown router"),
        ({}, [(f"n{i}", None) for i in range(11)], "more nodes on the internet"),
        ({f"r{i}": "cone" for i in range(79)}, [], "more routers on the internet"),
    ],
)
def test_plan_refuses_what_does_not_fit(
    routers: dict[str, str | RouterSpec], nodes: list[tuple[str, str | None]], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        plan(Topology.of(routers, nodes))


def test_cone_is_port_restricted() -> None:
    assert canonical_preset("cone") == "port-restricted"
    assert RouterSpec("cone").canonical == "port-restricted"


def test_nats_in_a_row_compose_to_the_strictest() -> None:
    cgn_sym = behaviour(MATRIX_PLAN, "home-sym")
    cgn_pr = behaviour(MATRIX_PLAN, "home-pr")

    assert cgn_sym == Behaviour(
        MappingKind.ADDRESS_AND_PORT_DEPENDENT, Filtering.ADDRESS_AND_PORT_DEPENDENT
    )
    assert cgn_pr == behaviour(MATRIX_PLAN, "cone-a")
    assert behaviour(MATRIX_PLAN, None) == Behaviour(MappingKind.NONE, Filtering.NONE)
    assert behaviour(MATRIX_PLAN, "udp-blocked").udp is False


def test_the_matrix_has_a_node_of_every_kind_and_symmetric_expectations() -> None:
    assert set(MATRIX_KINDS.values()) == set(KINDS)
    assert set(MATRIX_KINDS) == set(MATRIX_PLAN.nodes)
    pairs = ordered_pairs(MATRIX_PLAN)
    for a, b in pairs:
        assert expected_path(MATRIX_PLAN, a, b) == expected_path(MATRIX_PLAN, b, a), (a, b)
    paths = [expected_path(MATRIX_PLAN, a, b).path for a, b in pairs]
    assert (paths.count(Path.DIRECT), paths.count(Path.RELAY)) == (88, 22)
    assert paths.count(Path.STREAM_RELAY) == 22


@pytest.mark.parametrize(
    ("a", "b", "direct"),
    [
        ("symmetric", "public", True),  # peer-reflexive: the public node answers any port
        ("symmetric", "full-cone", True),
        ("symmetric", "address-restricted", True),  # its filter admits the same address
        ("symmetric", "cone-a", False),  # port-dependent filter: port prediction needed
        ("symmetric", "cgn-sym", False),
        ("shared-1", "shared-2", True),  # one LAN: host candidates
        ("cgn-pr", "cone-a", True),
        ("cgn-pr", "cgn-sym", False),
        ("udp-blocked", "public", False),
    ],
)
def test_expected_paths_of_the_issue(a: str, b: str, direct: bool) -> None:
    assert expected_path(MATRIX_PLAN, a, b).direct_possible is direct


def test_udp_blocked_pairs_need_the_stream_relay() -> None:
    blocked = Behaviour(MappingKind.ENDPOINT_INDEPENDENT, Filtering.NONE, udp=False)
    public = Behaviour(MappingKind.NONE, Filtering.NONE)

    assert expected_between(blocked, public, same_lan=True).path is Path.STREAM_RELAY


def test_docs_show_the_matrix_table_of_the_code() -> None:
    docs = (REPO_ROOT / "docs" / "e2e.md").read_text()

    assert kind_table() in docs
