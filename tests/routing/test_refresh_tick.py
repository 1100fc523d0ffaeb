"""The refresh tick's pure core (docs/protocol.md, "Refresh tick"): steps in, steps out.

No sockets, files or clocks: each test feeds :class:`RefreshTick` the results
a caller would get from the registry, the cache, the probes, the resolver
and the Manager, and checks what it asks for next and what it decided.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from natroute.routing import (
    BeaconCacheEntry,
    BeaconSelectionState,
    CacheError,
    ListSource,
    PickReason,
    RefreshAction,
    RefreshStep,
    RefreshTick,
    RegistryError,
    ResolveError,
    UsageError,
    pick_beacon,
)

KEY = b"identity-key-stable-bytes-1234"
NOW = datetime(2026, 11, 26, 3, 0, 0, tzinfo=UTC)
THREE = ["203.0.113.1:9001", "203.0.113.2:9001", "203.0.113.3:9001"]
A = RefreshAction


def tick(state: BeaconSelectionState | None = None, **kwargs: object) -> RefreshTick:
    kwargs.setdefault("first_tick", False)
    return RefreshTick(state or BeaconSelectionState([]), KEY, **kwargs)  # type: ignore[arg-type]


def test_a_swap_sets_registers_and_saves_in_that_order() -> None:
    state = BeaconSelectionState([])
    t = tick(state, first_tick=True)
    assert t.step == RefreshStep(A.LIST)
    pick = pick_beacon(THREE, KEY)
    # the registry's order does not matter; private and empty entries are dropped
    step = t.listed([*reversed(THREE), "10.0.0.1:9001", ""])
    assert step == RefreshStep(A.SET_BEACON, beacon=pick)
    assert state.get_current_pick() == ""  # nothing committed before the Manager has it
    assert t.succeeded() == RefreshStep(A.REGISTER)
    assert state.snapshot() == ([], THREE, pick)
    assert t.succeeded() == RefreshStep(A.SAVE_CACHE, addrs=tuple(THREE))
    assert t.succeeded().action is A.DONE
    out = t.outcome
    assert (out.source, out.discovered, out.reason, out.rtt) == (
        ListSource.REGISTRY,
        THREE,
        PickReason.HASH,
        {},
    )
    assert out.decision is not None
    assert (out.decision.new_pick, out.swapped, out.registered, out.errors) == (
        pick,
        True,
        True,
        (),
    )


def test_no_swap_only_saves() -> None:
    state = BeaconSelectionState([])
    t = tick(state)
    t.listed(THREE)
    t.succeeded()
    t.succeeded()
    t.succeeded()
    again = tick(state)
    assert again.listed(THREE) == RefreshStep(A.SAVE_CACHE, addrs=tuple(THREE))
    assert again.succeeded().action is A.DONE
    assert (again.outcome.swapped, again.outcome.registered) == (False, False)


@pytest.mark.parametrize(
    ("error", "text"),
    [
        (RegistryError("beacon_list send: refused"), "beacon_list send: refused"),
        (ConnectionResetError("reset"), "beacon list: reset"),
    ],
)
def test_a_failed_list_ends_a_later_tick(error: Exception, text: str) -> None:
    t = tick()
    assert t.failed(error).action is A.DONE
    assert t.outcome.source is ListSource.NONE
    assert t.outcome.decision is None
    assert t.outcome.errors == (text,)


def entry(age: timedelta, *addrs: str) -> BeaconCacheEntry:
    return BeaconCacheEntry(NOW - age, list(addrs))


def test_first_tick_falls_back_to_a_fresh_cache_and_never_saves_it() -> None:
    state = BeaconSelectionState([])
    t = tick(state, first_tick=True)
    assert t.failed(RegistryError("down")) == RefreshStep(A.READ_CACHE)
    step = t.cache_read(entry(timedelta(minutes=5), "203.0.113.2:9001", "10.0.0.1:1"), NOW)
    assert step == RefreshStep(A.SET_BEACON, beacon="203.0.113.2:9001")
    assert t.succeeded() == RefreshStep(A.REGISTER)
    assert t.succeeded().action is A.DONE  # D23: a cache we fell back to is not re-saved
    assert t.outcome.source is ListSource.CACHE
    assert t.outcome.discovered == ["203.0.113.2:9001"]
    assert t.outcome.errors == ("down",)


@pytest.mark.parametrize(
    ("cached", "errors"),
    [
        (None, ("down",)),
        (entry(timedelta(0)), ("down",)),
        (entry(timedelta(0), "10.0.0.1:9001", "127.0.0.1:1"), ("down",)),
        (
            entry(timedelta(hours=2), "203.0.113.2:9001"),
            ("down", "beacon cache is stale (7200 s old)"),
        ),
        (entry(timedelta(hours=1), "203.0.113.2:9001"), None),  # exactly the limit: used
    ],
    ids=["no-cache", "empty", "private-only", "stale", "at-the-limit"],
)
def test_which_caches_are_used(
    cached: BeaconCacheEntry | None, errors: tuple[str, ...] | None
) -> None:
    t = tick(first_tick=True)
    t.failed(RegistryError("down"))
    step = t.cache_read(cached, NOW)
    if errors is None:
        assert step.action is A.SET_BEACON
        return
    assert step.action is A.DONE
    assert t.outcome.source is ListSource.NONE
    assert t.outcome.errors == errors


def test_an_unreadable_cache_ends_the_tick() -> None:
    t = tick(first_tick=True)
    t.failed(RegistryError("down"))
    assert t.failed(CacheError("read beacon cache: denied")).action is A.DONE
    assert t.outcome.errors == ("down", "read beacon cache: denied")


def test_cache_max_age_is_the_tick_s_setting() -> None:
    t = tick(first_tick=True, cache_max_age=60.0)
    t.failed(RegistryError("down"))
    assert t.cache_read(entry(timedelta(minutes=2), "203.0.113.2:9001"), NOW).action is A.DONE


def test_probing_asks_for_rtts_and_may_override_the_hash_pick() -> None:
    state = BeaconSelectionState([])
    t = tick(state, probe=True)
    assert t.listed(THREE) == RefreshStep(A.PROBE, addrs=tuple(THREE))
    hash_pick = pick_beacon(THREE, KEY)
    fastest = next(a for a in THREE if a != hash_pick)
    step = t.measured({hash_pick: 0.100, fastest: 0.010, "198.51.100.9:1": 0.001})
    assert step == RefreshStep(A.SET_BEACON, beacon=fastest)
    t.succeeded()
    assert state.get_current_pick() == fastest
    assert t.outcome.reason is PickReason.RTT_OVERRIDE
    # the same measurements next time: no swap, still an override
    again = tick(state, probe=True)
    again.listed(THREE)
    assert again.measured({hash_pick: 0.100, fastest: 0.010}).action is A.SAVE_CACHE
    assert again.outcome.reason is PickReason.RTT_OVERRIDE


def test_zero_rtts_are_no_measurement() -> None:
    t = tick(probe=True)
    t.listed(THREE)
    step = t.measured(dict.fromkeys(THREE, 0.0))
    assert step == RefreshStep(A.SET_BEACON, beacon=pick_beacon(THREE, KEY))
    assert (t.outcome.reason, t.outcome.rtt) == (PickReason.HASH, {})


def test_one_beacon_is_not_probed() -> None:
    t = tick(probe=True)
    assert t.listed(THREE[:1]).action is A.SET_BEACON


def test_an_unresolvable_pick_changes_nothing_and_saves_nothing() -> None:
    state = BeaconSelectionState([])
    t = tick(state)
    t.listed(["unknown.example:9001"])
    assert t.failed(ResolveError("resolve beacon: no such host")).action is A.DONE
    assert state.snapshot() == ([], [], "")
    assert (t.outcome.swapped, t.outcome.errors) == (False, ("resolve beacon: no such host",))


def test_a_failed_registration_still_saves() -> None:
    t = tick()
    t.listed(THREE[:1])
    t.succeeded()
    step = t.failed(OSError(101, "Network is unreachable"))
    assert step == RefreshStep(A.SAVE_CACHE, addrs=(THREE[0],))
    assert t.failed(CacheError("write beacon cache: full")).action is A.DONE
    out = t.outcome
    assert (out.swapped, out.registered) == (True, False)
    assert out.errors == (
        "register with beacon: [Errno 101] Network is unreachable",
        "write beacon cache: full",
    )


def test_an_empty_registry_list_falls_back_to_bootstrap_without_saving() -> None:
    t = tick(BeaconSelectionState(["203.0.113.4:9001"]))
    assert t.listed([]) == RefreshStep(A.SET_BEACON, beacon="203.0.113.4:9001")
    t.succeeded()
    assert t.succeeded().action is A.DONE


def test_nothing_anywhere_decides_nothing() -> None:
    t = tick()
    assert t.listed([]).action is A.DONE
    assert t.outcome.decision is not None
    assert t.outcome.decision.new_pick == ""


def test_the_outcome_is_a_copy() -> None:
    t = tick()
    t.listed(THREE)
    t.outcome.discovered.clear()
    assert t.outcome.discovered == THREE


# -- every (step, input) pair ----------------------------------------------------------

Feed = Callable[[RefreshTick], RefreshStep]

FEEDS: dict[str, Feed] = {
    "listed": lambda t: t.listed(THREE),
    "cache_read": lambda t: t.cache_read(entry(timedelta(0), *THREE), NOW),
    "measured": lambda t: t.measured({THREE[0]: 0.01}),
    "succeeded": lambda t: t.succeeded(),
    "failed-registry": lambda t: t.failed(RegistryError("down")),
    "failed-cache": lambda t: t.failed(CacheError("bad")),
    "failed-resolve": lambda t: t.failed(ResolveError("bad")),
    "failed-send": lambda t: t.failed(OSError("unreachable")),
    "failed-bug": lambda t: t.failed(KeyError("bug")),
}

# Which inputs answer which step; every other pair is a UsageError.
ANSWERS: dict[RefreshAction, set[str]] = {
    A.LIST: {"listed", *(k for k in FEEDS if k.startswith("failed-"))},
    A.READ_CACHE: {"cache_read", "failed-cache"},
    A.PROBE: {"measured"},
    A.SET_BEACON: {"succeeded", "failed-resolve"},
    A.REGISTER: {"succeeded", "failed-send"},
    A.SAVE_CACHE: {"succeeded", "failed-cache"},
    A.DONE: set(),
}


def walk() -> list[tuple[str, ...]]:
    """Every path of inputs from a fresh first tick (probing on) until DONE."""
    paths: list[tuple[str, ...]] = []
    todo: list[tuple[str, ...]] = [()]
    while todo:
        path = todo.pop()
        paths.append(path)
        t = replay(path)
        for name in sorted(ANSWERS[t.step.action]):
            todo.append((*path, name))
    return paths


def replay(path: tuple[str, ...]) -> RefreshTick:
    t = tick(first_tick=True, probe=True)
    for name in path:
        FEEDS[name](t)
    return t


@pytest.mark.parametrize("path", walk(), ids=lambda p: "/".join(p) or "start")
def test_every_input_in_every_step(path: tuple[str, ...]) -> None:
    for name, feed in FEEDS.items():
        t = replay(path)
        before = (t.step, t.outcome)
        if name in ANSWERS[t.step.action]:
            after = feed(t)
            assert after == t.step
            assert len(path) < 8  # every path ends
        else:
            with pytest.raises(UsageError):
                feed(t)
            assert (t.step, t.outcome) == before  # a refused input changes nothing


def test_the_walk_reaches_every_step() -> None:
    seen = {replay(p).step.action for p in walk()}
    assert seen == set(RefreshAction)


def test_failures_name_what_each_step_may_raise() -> None:
    assert RefreshStep(A.SET_BEACON).failures == (ResolveError,)
    assert RefreshStep(A.PROBE).failures == ()
