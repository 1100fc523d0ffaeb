"""Hypothesis walks the Manager's relay/pin state machine against a reference model.

The model is docs/protocol.md, "Relay flag and pin" to "ICMP errors", written
as plainly as possible (dicts and a set);
after every step each observable of every peer is compared. A cap of 3 relay
keys over 5 peer IDs makes the cap paths ("Caps") reachable in short runs.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from natroute.routing import Addr, Manager, ManagerConfig, PeerRouting, SendOutcome

from .fakes import FakeClock, RecordingSender

PEERS = st.integers(1, 5)
BEACON: Addr = ("198.51.100.10", 9001)
DIRECT: Addr = ("203.0.113.5", 4000)
CONFIG = ManagerConfig(max_relay_peers=3)


@dataclass
class Model:
    """The Manager's relay state and heuristics, per peer, as plain data."""

    cfg: ManagerConfig
    now: float
    beacon: Addr | None = None
    relay: dict[int, bool] = field(default_factory=dict)
    pinned: set[int] = field(default_factory=set)
    misses: dict[int, int] = field(default_factory=dict)
    clears: dict[int, int] = field(default_factory=dict)
    send_errs: dict[int, int] = field(default_factory=dict)
    last_direct: dict[int, float] = field(default_factory=dict)
    last_out: dict[int, float] = field(default_factory=dict)
    first_out: dict[int, float] = field(default_factory=dict)

    def full(self) -> bool:
        return len(self.relay) >= self.cfg.max_relay_peers

    def set_relay(self, p: int, flag: bool) -> None:
        self.relay[p] = flag

    def set_pinned(self, p: int, flag: bool) -> None:
        self.relay[p] = flag
        if flag:
            self.pinned.add(p)
        else:
            self.pinned.discard(p)

    def admit(self, p: int) -> bool:
        if p not in self.relay and self.full():
            return False
        self.relay[p] = True
        self.pinned.add(p)
        return True

    def mark(self, p: int, had_crypto: bool) -> tuple[bool, bool, bool]:
        if not had_crypto:
            return True, False, False
        was = self.relay.get(p, False)
        if not was and self.full():
            return False, False, False
        self.relay[p] = True
        return True, not was, True

    def clear_on_direct(self, p: int, frm: Addr) -> bool:
        self.misses[p] = 0
        if self.beacon is not None and frm == self.beacon:
            return False
        if not self.relay.get(p, False) or p in self.pinned:
            return False
        self.clears[p] = self.clears.get(p, 0) + 1
        if self.clears[p] >= self.cfg.direct_clears_required:
            self.relay[p] = False
            self.clears[p] = 0
            return True
        return False

    def send_error(self, p: int, icmp: bool) -> tuple[bool, int]:
        if not icmp:
            return False, 0
        count = self.send_errs.get(p, 0) + 1
        self.send_errs[p] = count
        if (
            count >= self.cfg.send_err_threshold
            and not self.relay.get(p, False)
            and not self.full()
        ):
            self.relay[p] = True
            self.pinned.add(p)
            self.send_errs[p] = 0
            return True, count
        return False, count

    def flip(self, p: int) -> tuple[bool, bool, float, int]:
        if self.relay.get(p, False):
            return True, False, 0.0, 0
        if self.beacon is None:
            return False, False, 0.0, 0
        if p in self.last_direct:
            silent = self.now - self.last_direct[p]
        elif p in self.first_out:
            silent = self.now - self.first_out[p]
        else:
            return False, False, 0.0, 0
        if silent <= self.cfg.blackhole_threshold:
            return False, False, 0.0, 0
        misses = self.misses.get(p, 0) + 1
        self.misses[p] = misses
        if misses >= self.cfg.blackhole_misses_required:
            self.relay[p] = True
            self.pinned.add(p)
            self.misses[p] = 0
            return True, True, silent, misses
        return False, False, silent, misses

    def record_direct(self, p: int, t: float) -> None:
        self.last_direct[p] = t
        self.first_out.pop(p, None)

    def record_send(self, p: int, t: float) -> None:
        self.last_out[p] = t
        self.first_out.setdefault(p, t)

    def remove(self, p: int) -> None:
        for table in (
            self.relay,
            self.misses,
            self.clears,
            self.send_errs,
            self.last_direct,
            self.last_out,
            self.first_out,
        ):
            table.pop(p, None)
        self.pinned.discard(p)

    def routing(self, p: int) -> PeerRouting:
        return PeerRouting(
            node_id=p,
            relay=self.relay.get(p, False),
            pinned=p in self.pinned,
            blackhole_misses=self.misses.get(p, 0),
            direct_clears=self.clears.get(p, 0),
            send_errors=self.send_errs.get(p, 0),
            last_direct_recv=self.last_direct.get(p),
            last_outbound_send=self.last_out.get(p),
            first_outbound_send=self.first_out.get(p),
        )

    def entries(self) -> int:
        maps = (self.relay, self.misses, self.clears, self.send_errs)
        times = (self.last_direct, self.last_out, self.first_out)
        return sum(len(t) for t in maps) + sum(len(t) for t in times) + len(self.pinned)

    def ids(self) -> list[int]:
        keys: set[int] = set(self.pinned)
        for table in (self.relay, self.misses, self.clears, self.send_errs):
            keys.update(table)
        for times in (self.last_direct, self.last_out, self.first_out):
            keys.update(times)
        return sorted(keys)


class ManagerMachine(RuleBasedStateMachine):
    """Drive a real Manager and the model with the same operations."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.sock = RecordingSender()
        self.manager = Manager(self.clock, CONFIG)
        self.manager.set_socket(self.sock)
        self.model = Model(CONFIG, self.clock())

    # -- wiring --------------------------------------------------------------

    @rule(on=st.booleans())
    def set_beacon(self, on: bool) -> None:
        beacon = BEACON if on else None
        self.manager.set_beacon_addr_udp(beacon)
        self.model.beacon = beacon

    @rule(dt=st.sampled_from([0.25, 1.0, 4.0, 8.0, 8.5, 30.0]))
    def advance(self, dt: float) -> None:
        self.clock.advance(dt)
        self.model.now = self.clock()

    # -- relay flag and pin, receipts ------------------------------------------

    @rule(p=PEERS, flag=st.booleans())
    def set_relay_peer(self, p: int, flag: bool) -> None:
        self.manager.set_relay_peer(p, flag)
        self.model.set_relay(p, flag)

    @rule(p=PEERS, flag=st.booleans())
    def set_relay_peer_pinned(self, p: int, flag: bool) -> None:
        self.manager.set_relay_peer_pinned(p, flag)
        self.model.set_pinned(p, flag)

    @rule(p=PEERS)
    def unpin_relay_peer(self, p: int) -> None:
        self.manager.unpin_relay_peer(p)
        self.model.pinned.discard(p)

    @rule(p=PEERS)
    def admit_relay_from_beacon(self, p: int) -> None:
        assert self.manager.admit_relay_from_beacon(p) == self.model.admit(p)

    @rule(p=PEERS, had_crypto=st.booleans())
    def mark_relay_activated(self, p: int, had_crypto: bool) -> None:
        got = self.manager.mark_relay_activated_if_had_crypto(p, had_crypto)
        assert got == self.model.mark(p, had_crypto)

    @rule(p=PEERS)
    def clear_relay_on_direct(self, p: int) -> None:
        assert self.manager.clear_relay_on_direct(p, DIRECT) == self.model.clear_on_direct(
            p, DIRECT
        )

    @rule(p=PEERS)
    def clear_relay_on_beacon_source(self, p: int) -> None:
        # With no beacon set, the beacon's old address is just another direct source.
        assert self.manager.clear_relay_on_direct(p, BEACON) == self.model.clear_on_direct(
            p, BEACON
        )

    # -- heuristics -------------------------------------------------------------

    @rule(p=PEERS, icmp=st.booleans())
    def handle_send_error(self, p: int, icmp: bool) -> None:
        err = (
            ConnectionRefusedError(errno.ECONNREFUSED, "refused")
            if icmp
            else BlockingIOError(errno.EAGAIN, "again")
        )
        assert self.manager.handle_send_error(p, err) == self.model.send_error(p, icmp)

    @rule(p=PEERS)
    def maybe_flip_blackhole(self, p: int) -> None:
        assert self.manager.maybe_flip_blackhole(p) == self.model.flip(p)

    @rule(p=PEERS)
    def write_frame(self, p: int) -> None:
        should_relay = self.model.flip(p)[0]
        relayed = should_relay and self.model.beacon is not None
        out = self.manager.write_frame(p, DIRECT, b"PILS")
        assert out == SendOutcome(13 if relayed else 4, relayed)
        assert self.sock.sent[-1][1] == (BEACON if relayed else DIRECT)
        self.model.record_send(p, self.model.now)

    # -- timestamps and removal ------------------------------------------------

    @rule(p=PEERS, age=st.sampled_from([0.0, 8.0, 9.0]))
    def record_direct_recv(self, p: int, age: float) -> None:
        self.manager.record_direct_recv(p, self.model.now - age)
        self.model.record_direct(p, self.model.now - age)

    @rule(p=PEERS)
    def record_outbound_send(self, p: int) -> None:
        self.manager.record_outbound_send(p, self.model.now)
        self.model.record_send(p, self.model.now)

    @rule(p=PEERS)
    def clear_send_err_count(self, p: int) -> None:
        self.manager.clear_send_err_count(p)
        self.model.send_errs.pop(p, None)

    @precondition(lambda self: bool(self.model.ids()))
    @rule(p=PEERS)
    def remove_peer(self, p: int) -> None:
        self.manager.remove_peer(p)
        self.model.remove(p)

    # -- every observable after every step --------------------------------------

    @invariant()
    def observables_match(self) -> None:
        m, model = self.manager, self.model
        for p in range(1, 6):
            assert m.peer_routing(p) == model.routing(p)
            assert m.is_relay_peer(p) is model.relay.get(p, False)
            assert m.is_relay_pinned(p) is (p in model.pinned)
            assert m.blackhole_miss_count(p) == model.misses.get(p, 0)
            assert m.send_err_count(p) == model.send_errs.get(p, 0)
            assert m.has_direct_recv(p) is (p in model.last_direct)
            assert m.last_direct_recv(p) == model.last_direct.get(p)
            assert m.last_outbound_send(p) == model.last_out.get(p)
        assert m.relay_peer_count() == len(model.relay)
        assert m.relay_peer_ids() == sorted(p for p, v in model.relay.items() if v)
        assert m.peer_state_entries() == model.entries()
        assert m.peer_ids() == model.ids()
        assert m.beacon_addr() == model.beacon
        assert m.untracked_count() == 0


ManagerMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestManagerStateMachine = ManagerMachine.TestCase
