"""Beacon selection helpers (docs/protocol.md, "Beacon selection").

``test_s8_N``: the seed's upstream test scenario N; ``test_s9_N``: an edge case
the upstream tests left out.
"""

from __future__ import annotations

import random

import pytest

from natroute.routing import (
    BEACON_REFRESH_JITTER,
    BeaconSelectionState,
    RefreshDecision,
    RegistryError,
    compute_refresh_decision,
    fetch_beacon_list,
    filter_unreachable,
    first_beacon,
    fnv1a32,
    initial_jitter,
    is_unreachable_beacon_host,
    merge_beacon_lists,
    parse_beacon_list,
    pick_beacon,
    pick_beacon_with_rtt,
)

from .fakes import FakeLister

ABCD = ["a:1", "b:2", "c:3", "d:4"]


# -- hash pick -----------------------------------------------------------------


def test_s8_01_pick_is_stable_for_a_key() -> None:
    first = pick_beacon(ABCD, b"fixed-key")
    assert all(pick_beacon(ABCD, b"fixed-key") == first for _ in range(100))


def test_s8_02_varied_keys_spread() -> None:
    keys = [b"alpha", b"beta-key-2", b"gamma", b"delta", b"epsilon", b"zeta", b"eta", b"theta"]
    keys += [b"iota", b"kappa", b"lambda", b"mu", b"x", b"xx", b"xxx", b"xxxx"]
    assert len({pick_beacon(ABCD, k) for k in keys}) >= 2


def test_s8_03_one_byte_key_change_moves_the_pick() -> None:
    abc = ["a:1", "b:2", "c:3"]
    assert any(
        pick_beacon(abc, bytes([i])) != pick_beacon(abc, bytes([i + 1, 0xFF])) for i in range(32)
    )


def test_s8_04_empty_and_single() -> None:
    assert pick_beacon([], b"k") == ""
    assert pick_beacon(["only:1"], b"any") == "only:1"
    assert pick_beacon(["only:1"], None) == "only:1"


@pytest.mark.parametrize(
    ("key", "digest", "picks"),
    [
        (b"", 0x811C9DC5, (1, 1, 1)),
        (b"a", 0xE40C292C, (0, 1, 0)),
        (b"k", 0xEE0C38EA, (0, 0, 2)),
        (b"any", 0x2C29F04D, (1, 0, 1)),
        (b"stable-key", 0x2CE32AA8, (0, 1, 0)),
        (b"identity-key-stable-bytes-1234", 0x58255464, (0, 0, 0)),
        (bytes(32), 0x0B2AE445, (1, 2, 1)),
    ],
)
def test_s9_06_fnv1a_vectors(key: bytes, digest: int, picks: tuple[int, int, int]) -> None:
    assert fnv1a32(key) == digest
    for size, index in zip((2, 3, 4), picks, strict=True):
        assert pick_beacon(ABCD[:size], key) == ABCD[index]


def test_s9_06_none_key_hashes_like_empty() -> None:
    assert pick_beacon(ABCD[:3], None) == pick_beacon(ABCD[:3], b"") == "b:2"


# -- RTT override ---------------------------------------------------------------

ABC = ["A", "B", "C"]
KEY_B = b"a"  # fnv1a32(b"a") % 3 == 1 -> hash pick "B"


@pytest.mark.parametrize(
    ("rtt", "expected"),
    [
        ({"A": 0.010, "B": 0.025}, "A"),
        ({"A": 0.010, "B": 0.020}, "B"),  # exactly 2x does not override
        ({"A": 0.010}, "A"),  # hash pick did not answer
        ({"D": 0.005}, "B"),  # entries not in the list are ignored
        ({}, "B"),
        ({"A": 0.0, "B": 0.001}, "A"),  # zero is a measurement
        ({"A": 0.010, "C": 0.010, "B": 0.5}, "A"),  # tie -> earliest in list order
        ({"C": 0.010, "A": 0.010, "B": 0.5}, "A"),
        ({"B": 0.001, "A": 0.010}, "B"),  # hash pick is fastest
    ],
)
def test_s9_04_pick_beacon_with_rtt(rtt: dict[str, float], expected: str) -> None:
    assert pick_beacon(ABC, KEY_B) == "B"
    assert pick_beacon_with_rtt(ABC, KEY_B, rtt) == expected


def test_s9_04_pick_beacon_with_rtt_empty_list() -> None:
    assert pick_beacon_with_rtt([], KEY_B, {"A": 1.0}) == ""


# -- parse_beacon_list, first_beacon ------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", []),  # the seed's nil; D-decision: [] instead of None
        ("a:1", ["a:1"]),
        ("a:1,b:2,c:3", ["a:1", "b:2", "c:3"]),
        (" a:1 , , b:2 ", ["a:1", "b:2"]),
        (",", []),
        ("  ", []),
        ("a:1,a:1", ["a:1", "a:1"]),
        ("\ta:1\n,\u00a0b:2", ["a:1", "b:2"]),
    ],
)
def test_s8_43_parse_beacon_list(text: str, expected: list[str]) -> None:
    assert parse_beacon_list(text) == expected


def test_s8_46_first_beacon() -> None:
    assert first_beacon("") == ""
    assert first_beacon(" , ") == ""
    assert first_beacon("a:1,b:2") == "a:1"


# -- unreachable hosts and filter_unreachable -----------------------------------


@pytest.mark.parametrize(
    ("host", "unreachable"),
    [
        ("127.0.0.1", True),
        ("10.0.0.1", True),
        ("172.16.5.5", True),
        ("192.168.1.1", True),
        ("169.254.1.1", True),
        ("0.0.0.0", True),
        ("203.0.113.1", False),
        ("8.8.8.8", False),
        ("beacon.example.com", False),
        ("::1", True),
        ("::", True),
        ("fc00::1", True),
        ("fd12::1", True),
        ("fe80::1", True),
        ("::ffff:10.0.0.1", True),
        ("::ffff:8.8.8.8", False),
        ("172.32.0.1", False),
        ("100.64.0.1", False),
        ("224.0.0.1", False),
        ("255.255.255.255", False),
        ("240.0.0.1", False),
        ("0.1.2.3", False),
        ("198.51.100.1", False),
        ("fec0::1", False),
        ("2001:db8::1", False),
        ("010.0.0.1", False),  # leading zeros do not parse -> kept
        ("[::1]", False),  # brackets are not an IP literal
    ],
)
def test_s8_44_is_unreachable_beacon_host(host: str, unreachable: bool) -> None:
    assert is_unreachable_beacon_host(host) is unreachable


@pytest.mark.parametrize(
    ("addr", "kept"),
    [
        ("[::1]", False),  # D24: upstream kept it
        ("fe80::1", False),
        ("10.0.0.1", False),
        ("10.0.0.1:", False),
        ("10.0.0.1:x", False),
        ("beacon.example.com:9001", True),
        ("beacon.example.com", True),
        ("[fc00::1]:9001", False),
        ("100.64.0.1:9001", True),
        ("::ffff:10.0.0.1", False),
        ("[fe80::1%eth0]:9001", False),  # D24: upstream kept it
        ("[2001:db8::1]:9001", True),
        ("203.0.113.1:9001", True),
        ("[2001:db8::1", True),
        ("[x]y", True),
    ],
)
def test_s9_05_filter_unreachable(addr: str, kept: bool) -> None:
    assert filter_unreachable([addr]) == ([addr] if kept else [])


def test_s9_05_filter_keeps_order_and_duplicates() -> None:
    addrs = ["b:1", "10.0.0.1:1", "a:1", "b:1"]
    assert filter_unreachable(addrs) == ["b:1", "a:1", "b:1"]
    assert filter_unreachable(None) == []
    assert filter_unreachable([]) == []


# -- merge_beacon_lists -----------------------------------------------------------


def test_s8_45_merge_beacon_lists() -> None:
    merged = merge_beacon_lists(["boot:1", "boot:2"], ["boot:1", "disc:3", "", "disc:4"])
    assert merged == ["boot:1", "boot:2", "disc:3", "disc:4"]


def test_merge_dedupes_bootstrap_and_is_case_sensitive() -> None:
    assert merge_beacon_lists(["a:1", "a:1", "A:1"], None) == ["a:1", "A:1"]


def test_s9_07_merge_empty_and_blank() -> None:
    assert merge_beacon_lists([], []) == []
    assert merge_beacon_lists(None, None) == []
    assert merge_beacon_lists(["", ""], None) == []
    state = BeaconSelectionState(["", ""])
    assert compute_refresh_decision(state, None, b"k") == RefreshDecision([], "", False)


# -- fetch_beacon_list ------------------------------------------------------------


def test_s8_39_fetch_without_client() -> None:
    with pytest.raises(RegistryError, match="nil registry client"):
        fetch_beacon_list(None)


def test_s8_40_fetch_filters_and_sorts() -> None:
    lister = FakeLister(
        {
            "beacons": [
                {"addr": "203.0.113.10:9001"},
                {"addr": "10.0.0.5:9001"},
                {"addr": ""},
                {"other": "k"},
                {"addr": "198.51.100.20:9001"},
            ]
        }
    )
    assert fetch_beacon_list(lister) == ["198.51.100.20:9001", "203.0.113.10:9001"]
    assert lister.calls == [{"type": "beacon_list"}]


def test_s8_41_fetch_lister_raising() -> None:
    with pytest.raises(RegistryError, match="beacon_list send: boom"):
        fetch_beacon_list(FakeLister(error=ConnectionError("boom")))


def test_s8_42_fetch_without_beacons_key() -> None:
    assert fetch_beacon_list(FakeLister({"other": "x"})) == []
    assert fetch_beacon_list(FakeLister(None)) == []
    assert fetch_beacon_list(FakeLister({})) == []


def test_s8_53_registry_discovery_cases() -> None:
    assert fetch_beacon_list(FakeLister.of("a:1", "c:3", "b:2")) == ["a:1", "b:2", "c:3"]
    assert fetch_beacon_list(FakeLister({"beacons": []})) == []
    with pytest.raises(RegistryError):
        fetch_beacon_list(FakeLister(error=OSError("down")))
    with pytest.raises(RegistryError):
        fetch_beacon_list(None)
    malformed = {"beacons": [{"id": 2}, "a-string", {"addr": ""}, {"addr": 5}, {"addr": "x:1"}]}
    assert fetch_beacon_list(FakeLister(malformed)) == ["x:1"]


@pytest.mark.parametrize("beacons", [{"addr": "a:1"}, "a:1", 7, None])
def test_s9_19_beacons_not_an_array(beacons: object) -> None:
    assert fetch_beacon_list(FakeLister({"beacons": beacons})) == []


def test_s9_19_registry_duplicates_survive_until_merge() -> None:
    discovered = fetch_beacon_list(FakeLister.of("b:2", "a:1", "b:2"))
    assert discovered == ["a:1", "b:2", "b:2"]
    assert merge_beacon_lists([], discovered) == ["a:1", "b:2"]


# -- refresh decision -------------------------------------------------------------


def test_s8_05_first_decision_swaps() -> None:
    state = BeaconSelectionState(["boot:1"])
    d = compute_refresh_decision(state, ["disc1:1", "disc2:2"], b"key")
    assert d.should_swap
    assert d.new_pick != ""
    assert d.new_list == ["boot:1", "disc1:1", "disc2:2"]


def test_s8_06_same_inputs_do_not_swap_again() -> None:
    state = BeaconSelectionState(["boot:1", "boot:2"])
    first = compute_refresh_decision(state, None, b"key")
    state.apply_refresh_decision(first)
    again = compute_refresh_decision(state, None, b"key")
    assert not again.should_swap
    assert again.new_pick == first.new_pick == state.get_current_pick()


def test_s8_07_empty_bootstrap_and_discovered() -> None:
    d = compute_refresh_decision(BeaconSelectionState([]), [], b"key")
    assert d == RefreshDecision([], "", False)


def test_s8_08_single_bootstrap() -> None:
    d = compute_refresh_decision(BeaconSelectionState(["only:9000"]), None, b"key")
    assert (d.new_pick, d.should_swap) == ("only:9000", True)


def test_s8_09_removed_pick_swaps_to_survivor() -> None:
    survivor = BeaconSelectionState(["survivor:1"])
    survivor.apply_refresh_decision(RefreshDecision(["removed:1"], "removed:1", True))
    d = compute_refresh_decision(survivor, None, b"k")
    assert (d.new_pick, d.should_swap) == ("survivor:1", True)


def test_s8_55_refresh_sequences() -> None:
    key = b"stable-key"
    state = BeaconSelectionState([])
    first = compute_refresh_decision(state, ["a:1", "b:2", "c:3"], key)
    state.apply_refresh_decision(first)
    stable = compute_refresh_decision(state, ["a:1", "b:2", "c:3"], key)
    assert (stable.new_pick, stable.should_swap) == (first.new_pick, False)
    remaining = [a for a in ["a:1", "b:2", "c:3"] if a != first.new_pick]
    removed = compute_refresh_decision(state, remaining, key)
    assert removed.should_swap
    assert removed.new_pick != first.new_pick
    assert first.new_pick not in removed.new_list
    fallback = BeaconSelectionState(["boot:1"])
    assert compute_refresh_decision(fallback, [], key).new_list == ["boot:1"]
    merged = compute_refresh_decision(BeaconSelectionState(["z:9"]), ["a:1", "z:9"], key)
    assert merged.new_list == ["z:9", "a:1"]


def test_s8_56_apply_without_swap_keeps_pick() -> None:
    state = BeaconSelectionState(["a:1"])
    state.apply_refresh_decision(RefreshDecision(["a:1"], "a:1", True))
    state.apply_refresh_decision(RefreshDecision(["a:1", "b:2"], "b:2", False))
    assert state.get_current_pick() == "a:1"
    assert state.snapshot() == (["a:1"], ["a:1", "b:2"], "a:1")
    state.apply_refresh_decision(RefreshDecision([], "", True))  # empty pick never applied
    assert state.snapshot() == (["a:1"], [], "a:1")


def test_selection_state_copies_bootstrap() -> None:
    boot = ["a:1"]
    state = BeaconSelectionState(boot)
    boot.append("b:2")
    assert state.bootstrap == ["a:1"]
    state.bootstrap.append("c:3")
    assert state.bootstrap == ["a:1"]
    assert BeaconSelectionState(None).snapshot() == ([], [], "")


# -- initial_jitter -------------------------------------------------------------


def test_s8_61_initial_jitter_in_range() -> None:
    rng = random.Random(61)
    samples = [initial_jitter(rng) for _ in range(1000)]
    assert all(0.0 <= s < BEACON_REFRESH_JITTER for s in samples)
    assert len(set(samples)) > 900
    assert 0.0 <= initial_jitter() < BEACON_REFRESH_JITTER


class _TopRandom(random.Random):
    """An RNG whose ``random()`` rounds up to 1.0 after scaling (float edge)."""

    def random(self) -> float:
        return 1.0


def test_initial_jitter_never_equals_the_bound() -> None:
    assert initial_jitter(_TopRandom()) == 0.0
