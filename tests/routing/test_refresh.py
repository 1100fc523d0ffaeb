"""One beacon refresh tick (docs/protocol.md, "Refresh tick"; docs/decisions.md D23, D25).

``test_s8_N``: the seed's upstream test scenario N.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from natroute.routing import (
    Addr,
    BeaconSelectionState,
    BeaconSource,
    ListSource,
    Manager,
    PickReason,
    RefreshOutcome,
    RegistryError,
    beacon_cache_path,
    load_beacon_cache_entry,
    pick_beacon,
    refresh_tick,
    save_beacon_cache,
)

from .fakes import FakeClock, FakeLister, RecordingSender, ResolverTable

KEY = b"identity-key-stable-bytes-1234"
NOW = datetime(2026, 11, 26, 3, 0, 0, tzinfo=UTC)
NAMES: dict[str, Addr] = {
    "203.0.113.1:9001": ("203.0.113.1", 9001),
    "203.0.113.2:9001": ("203.0.113.2", 9001),
    "203.0.113.3:9001": ("203.0.113.3", 9001),
    "203.0.113.4:9001": ("203.0.113.4", 9001),
    "10.128.0.78:9001": ("10.128.0.78", 9001),
}
OUR_ID = 0x00C0FFEE
DISCOVER = b"\x01" + OUR_ID.to_bytes(4, "big")


def wall() -> datetime:
    return NOW


@dataclass
class Daemon:
    """What the refresh loop holds: selection state, Manager, registry, identity path."""

    tmp_path: Path
    bootstrap: list[str] = field(default_factory=list)
    sock: RecordingSender = field(default_factory=RecordingSender)
    lister: FakeLister = field(default_factory=FakeLister)

    def __post_init__(self) -> None:
        self.state = BeaconSelectionState(self.bootstrap)
        self.resolver = ResolverTable(NAMES)
        self.manager = Manager(FakeClock(), resolver=self.resolver)
        self.manager.set_socket(self.sock)
        self.manager.set_local_node_id_fn(lambda: OUR_ID)
        self.identity = str(self.tmp_path / "identity.json")

    @property
    def cache_file(self) -> Path:
        return Path(beacon_cache_path(self.identity))

    def tick(
        self,
        *,
        first_tick: bool = False,
        prober: Callable[[list[str]], dict[str, float]] | None = None,
        wall_clock: Callable[[], datetime] = wall,
        beacon_source: BeaconSource | None = None,
    ) -> RefreshOutcome:
        self.sock.sent.clear()
        return refresh_tick(
            self.state,
            self.manager,
            self.lister,
            KEY,
            self.identity,
            first_tick=first_tick,
            prober=prober,
            wall_clock=wall_clock,
            beacon_source=beacon_source,
        )

    def registrations(self) -> list[tuple[bytes, Addr]]:
        return [(d, a) for d, a in self.sock.sent if d[:1] == b"\x01"]


@pytest.fixture
def daemon(tmp_path: Path) -> Daemon:
    return Daemon(tmp_path)


def test_s8_57_end_to_end_with_fake_registry(daemon: Daemon) -> None:
    three = ["203.0.113.1:9001", "203.0.113.2:9001", "203.0.113.3:9001"]
    daemon.lister.set_addrs(*reversed(three))
    # Initial swap: pick, set on the Manager, register, save the cache.
    out = refresh_tick(
        daemon.state,
        daemon.manager,
        daemon.lister,
        KEY,
        daemon.identity,
        first_tick=True,
        wall_clock=wall,
    )
    pick = pick_beacon(three, KEY)
    assert out.source is ListSource.REGISTRY
    assert out.discovered == three
    assert out.decision is not None
    assert out.decision.new_list == three
    assert (out.swapped, out.registered, out.errors) == (True, True, ())
    assert out.reason is PickReason.HASH
    assert daemon.state.get_current_pick() == pick
    assert daemon.manager.beacon_addr() == NAMES[pick]
    assert daemon.registrations() == [(DISCOVER, NAMES[pick])]
    assert load_beacon_cache_entry(daemon.identity) is not None

    # No-op tick: same list, no swap, no registration.
    out = daemon.tick()
    assert (out.swapped, out.registered) == (False, False)
    assert daemon.sock.sent == []
    assert daemon.state.get_current_pick() == pick

    # Scale-down: the pick leaves the registry, the tick swaps elsewhere.
    survivors = [a for a in three if a != pick]
    daemon.lister.set_addrs(*survivors)
    out = daemon.tick()
    new_pick = daemon.state.get_current_pick()
    assert out.swapped
    assert new_pick in survivors
    assert daemon.manager.beacon_addr() == NAMES[new_pick]
    assert daemon.registrations() == [(DISCOVER, NAMES[new_pick])]

    # Scale-up: the list grows.
    daemon.lister.set_addrs(*three, "203.0.113.4:9001")
    out = daemon.tick()
    assert out.decision is not None
    assert out.decision.new_list == [*three, "203.0.113.4:9001"]
    assert daemon.state.snapshot()[1] == [*three, "203.0.113.4:9001"]

    # Registry failure on a later tick: pick unchanged, nothing sent.
    before = daemon.state.get_current_pick()
    daemon.lister.error = ConnectionError("registry down")
    out = daemon.tick()
    assert out.source is ListSource.NONE
    assert out.errors == ("beacon_list send: registry down",)
    assert daemon.state.get_current_pick() == before
    assert daemon.sock.sent == []


def test_s8_58_cold_start_from_cache(daemon: Daemon) -> None:
    save_beacon_cache(daemon.identity, ["203.0.113.2:9001"], now=NOW - timedelta(minutes=5))
    before = daemon.cache_file.read_bytes()
    daemon.lister.error = OSError("registry unreachable")
    out = daemon.tick(first_tick=True)
    assert out.source is ListSource.CACHE
    assert out.swapped
    assert out.registered
    assert daemon.state.get_current_pick() == "203.0.113.2:9001"
    assert daemon.registrations() == [(DISCOVER, NAMES["203.0.113.2:9001"])]
    # D23: a cache we fell back to is never re-saved (saved_at stays honest).
    assert daemon.cache_file.read_bytes() == before


def test_s8_59_failing_registry_after_first_tick(daemon: Daemon) -> None:
    save_beacon_cache(daemon.identity, ["203.0.113.2:9001"], now=NOW)
    daemon.lister.error = OSError("down")
    out = daemon.tick(first_tick=False)
    assert out.source is ListSource.NONE
    assert out.decision is None
    assert daemon.state.get_current_pick() == ""
    assert daemon.manager.beacon_addr() is None
    assert daemon.sock.sent == []


@pytest.mark.parametrize("swap", [True, False], ids=["swap-path", "no-swap-path"])
def test_s8_60_private_bootstrap_never_reaches_cache(tmp_path: Path, swap: bool) -> None:
    daemon = Daemon(tmp_path, bootstrap=["10.128.0.78:9001"])
    daemon.lister.set_addrs("203.0.113.1:9001", "10.0.0.9:9001")
    if not swap:
        first = daemon.tick(first_tick=True)
        assert first.swapped
        daemon.cache_file.unlink()
    out = daemon.tick(first_tick=swap)
    assert out.swapped is swap
    raw = daemon.cache_file.read_text()
    assert "10.128.0.78" not in raw
    assert "10.0.0.9" not in raw
    assert "203.0.113.1:9001" in raw


def test_stale_cache_refused(daemon: Daemon) -> None:
    save_beacon_cache(daemon.identity, ["203.0.113.2:9001"], now=NOW - timedelta(hours=2))
    daemon.lister.error = OSError("down")
    out = daemon.tick(first_tick=True)
    assert out.source is ListSource.NONE
    assert out.errors[-1] == "beacon cache is stale (7200 s old)"
    assert daemon.state.get_current_pick() == ""
    assert daemon.sock.sent == []


def test_cache_without_saved_at_is_stale(daemon: Daemon) -> None:
    daemon.cache_file.write_text('{"addrs":["203.0.113.2:9001"]}')
    daemon.lister.error = OSError("down")
    assert daemon.tick(first_tick=True).source is ListSource.NONE


@pytest.mark.parametrize(
    "content", [None, '{"saved_at":"2026-11-26T03:00:00Z","addrs":[]}', "private"]
)
def test_first_tick_without_usable_cache_skips(daemon: Daemon, content: str | None) -> None:
    if content == "private":
        save_beacon_cache(daemon.identity, ["10.0.0.1:9001", "127.0.0.1:1"], now=NOW)
    elif content is not None:
        daemon.cache_file.write_text(content)
    daemon.lister = FakeLister(error=OSError("down"))
    out = daemon.tick(first_tick=True)
    assert out.source is ListSource.NONE
    assert daemon.sock.sent == []


def test_first_tick_unreadable_cache(daemon: Daemon) -> None:
    daemon.cache_file.mkdir()
    daemon.lister.error = OSError("down")
    out = daemon.tick(first_tick=True)
    assert out.source is ListSource.NONE
    assert out.errors[0] == "beacon_list send: down"
    assert out.errors[1].startswith("read beacon cache")


def test_no_registry_client_uses_cache(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path)
    save_beacon_cache(daemon.identity, ["203.0.113.3:9001"], now=NOW)
    out = refresh_tick(
        daemon.state, daemon.manager, None, KEY, daemon.identity, first_tick=True, wall_clock=wall
    )
    assert out.source is ListSource.CACHE
    assert out.errors == ("nil registry client",)
    assert daemon.state.get_current_pick() == "203.0.113.3:9001"


class Prober:
    """A fake RTT prober: fixed answers, records what it was asked."""

    def __init__(self, rtt: dict[str, float]) -> None:
        self.rtt = rtt
        self.calls: list[list[str]] = []

    def __call__(self, addrs: list[str]) -> dict[str, float]:
        self.calls.append(list(addrs))
        return {a: t for a, t in self.rtt.items() if a in addrs}


def test_rtt_override(daemon: Daemon) -> None:
    three = ["203.0.113.1:9001", "203.0.113.2:9001", "203.0.113.3:9001"]
    daemon.lister.set_addrs(*three)
    hash_pick = pick_beacon(three, KEY)
    fastest = next(a for a in three if a != hash_pick)
    prober = Prober({hash_pick: 0.100, fastest: 0.010})
    out = daemon.tick(prober=prober)
    assert prober.calls == [three]
    assert out.reason is PickReason.RTT_OVERRIDE
    assert out.rtt == {hash_pick: 0.100, fastest: 0.010}
    assert daemon.state.get_current_pick() == fastest
    assert daemon.manager.beacon_addr() == NAMES[fastest]
    # The next tick with the same measurements keeps the override, no swap.
    again = daemon.tick(prober=prober)
    assert again.reason is PickReason.RTT_OVERRIDE
    assert again.swapped is False


def test_rtt_probe_results_that_do_not_override(daemon: Daemon) -> None:
    three = ["203.0.113.1:9001", "203.0.113.2:9001", "203.0.113.3:9001"]
    daemon.lister.set_addrs(*three)
    hash_pick = pick_beacon(three, KEY)
    other = next(a for a in three if a != hash_pick)
    # Zero and negative RTTs are dropped (D25): no measurements left -> hash pick.
    out = daemon.tick(prober=Prober({other: 0.0, hash_pick: -1.0}))
    assert (out.reason, out.rtt) == (PickReason.HASH, {})
    assert daemon.state.get_current_pick() == hash_pick
    # Hash pick within 2x of the fastest: kept.
    out = daemon.tick(prober=Prober({hash_pick: 0.020, other: 0.010}))
    assert out.reason is PickReason.HASH
    assert not out.swapped


def test_prober_not_used_for_a_single_beacon(daemon: Daemon) -> None:
    daemon.lister.set_addrs("203.0.113.1:9001")
    prober = Prober({"203.0.113.1:9001": 0.01})
    daemon.tick(prober=prober)
    assert prober.calls == []


def test_resolve_failure_leaves_state_unchanged(daemon: Daemon) -> None:
    daemon.lister.set_addrs("unknown.example:9001")
    out = daemon.tick(first_tick=True)
    assert out.swapped is False
    assert out.errors[0].startswith("resolve beacon")
    assert daemon.state.snapshot() == ([], [], "")
    assert daemon.manager.beacon_addr() is None
    assert daemon.sock.sent == []
    assert not daemon.cache_file.exists()


def test_register_failure_recorded(daemon: Daemon) -> None:
    daemon.lister.set_addrs("203.0.113.1:9001")
    daemon.sock.fail_with(OSError(errno.ENETUNREACH, "Network is unreachable"))
    out = daemon.tick()
    assert out.swapped
    assert not out.registered
    assert out.errors == ("register with beacon: [Errno 101] Network is unreachable",)
    assert daemon.state.get_current_pick() == "203.0.113.1:9001"
    assert daemon.cache_file.exists()


def test_cache_write_failure_recorded(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path / "missing")
    daemon.lister.set_addrs("203.0.113.1:9001")
    out = daemon.tick()
    assert out.swapped
    assert out.errors[0].startswith("write beacon cache")
    out = daemon.tick()  # the no-swap path saves too, and reports the same failure
    assert not out.swapped
    assert out.errors[0].startswith("write beacon cache")


def test_empty_registry_falls_back_to_bootstrap_without_saving(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path, bootstrap=["203.0.113.4:9001"])
    daemon.lister.set_addrs()
    out = daemon.tick(first_tick=True)
    assert out.swapped
    assert daemon.state.get_current_pick() == "203.0.113.4:9001"
    assert not daemon.cache_file.exists()  # nothing discovered, nothing saved


def test_empty_everything_does_nothing(daemon: Daemon) -> None:
    daemon.lister.set_addrs()
    out = daemon.tick(first_tick=True)
    assert out.decision is not None
    assert out.decision.new_pick == ""
    assert daemon.sock.sent == []
    assert daemon.manager.beacon_addr() is None


def test_typed_beacon_source_replaces_the_lister(daemon: Daemon) -> None:
    calls: list[int] = []

    def source() -> list[str]:
        calls.append(1)
        return ["203.0.113.2:9001", "", "10.0.0.5:9001", "203.0.113.1:9001"]

    out = daemon.tick(first_tick=True, beacon_source=source)
    assert calls == [1]
    assert daemon.lister.calls == []
    assert out.source is ListSource.REGISTRY
    assert out.discovered == ["203.0.113.1:9001", "203.0.113.2:9001"]  # cleaned and sorted
    assert out.swapped


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(RegistryError("registry: transport: refused"), id="registry-error"),
        pytest.param(ConnectionResetError("reset"), id="other-error"),
    ],
)
def test_typed_beacon_source_failures_are_registry_errors(daemon: Daemon, error: Exception) -> None:
    def source() -> list[str]:
        raise error

    out = daemon.tick(beacon_source=source)
    assert out.source is ListSource.NONE
    assert str(error) in out.errors[0]
    assert daemon.lister.calls == []
