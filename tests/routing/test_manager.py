"""The routing Manager, method by method (docs/protocol.md, "The routing Manager").

``test_s8_N`` reproduces the seed's upstream test scenario N, ``test_s9_N`` an
edge case the upstream tests left out (numbered as in the seed's test list).
"""

from __future__ import annotations

import errno
import logging
from dataclasses import dataclass, field

import pytest

from natroute.routing import (
    MAX_RELAY_PEERS,
    Addr,
    BlackholeCheck,
    Manager,
    ManagerConfig,
    NoAddressError,
    PeerRouting,
    RelayAdmission,
    ResolveError,
    RoutingError,
    SendError,
    SendErrorCount,
    SendOutcome,
    SocketNotSetError,
    UsageError,
    is_icmp_unreachable,
)

from .fakes import Counters, FakeClock, RecordingSender, ResolverTable

BEACON: Addr = ("198.51.100.10", 9001)
PEER_ADDR: Addr = ("203.0.113.5", 4000)
OUR_ID = 0x0A0B0C0D


@dataclass
class Rig:
    """A Manager wired to a fake clock and a recording socket."""

    clock: FakeClock = field(default_factory=FakeClock)
    sock: RecordingSender = field(default_factory=RecordingSender)
    resolver: ResolverTable = field(
        default_factory=lambda: ResolverTable(
            {"beacon.example:9001": BEACON, "other.example:9002": ("198.51.100.20", 9002)}
        )
    )
    config: ManagerConfig | None = None
    manager: Manager = field(init=False)

    def __post_init__(self) -> None:
        self.manager = Manager(self.clock, self.config, resolver=self.resolver)
        self.manager.set_socket(self.sock)
        self.manager.set_local_node_id_fn(lambda: OUR_ID)


def rig(*, beacon: Addr | None = None, config: ManagerConfig | None = None) -> Rig:
    r = Rig(config=config)
    if beacon is not None:
        r.manager.set_beacon_addr_udp(beacon)
    return r


def refused() -> ConnectionRefusedError:
    return ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")


# -- wiring -------------------------------------------------------------------


def test_s6_1_new_manager_is_empty() -> None:
    m = Manager()
    assert m.beacon_addr() is None
    assert m.relay_peer_ids() == []
    assert m.relay_peer_count() == 0
    assert m.peer_state_entries() == 0
    assert m.peer_ids() == []
    assert m.untracked_count() == 0
    assert m.config == ManagerConfig()


def test_s6_4_set_beacon_addr_resolves() -> None:
    r = rig()
    r.manager.set_beacon_addr("beacon.example:9001")
    assert r.manager.beacon_addr() == BEACON
    assert r.resolver.calls == ["beacon.example:9001"]


def test_s9_21_unresolvable_beacon_keeps_previous() -> None:
    r = rig()
    r.manager.set_beacon_addr("beacon.example:9001")
    with pytest.raises(ResolveError):
        r.manager.set_beacon_addr("nowhere.invalid:1")
    assert r.manager.beacon_addr() == BEACON
    r.manager.set_beacon_addr_udp(None)
    assert r.manager.beacon_addr() is None


def test_d18_empty_beacon_addr_rejected_by_default_resolver() -> None:
    m = Manager(FakeClock())
    m.set_beacon_addr_udp(BEACON)
    with pytest.raises(ResolveError, match="empty"):
        m.set_beacon_addr("")
    assert m.beacon_addr() == BEACON


def test_default_resolver_takes_literals() -> None:
    m = Manager(FakeClock())
    m.set_beacon_addr("127.0.0.1:9001")
    assert m.beacon_addr() == ("127.0.0.1", 9001)


@pytest.mark.parametrize(
    ("frm", "expected"),
    [
        (None, False),
        (BEACON, True),
        (("::ffff:198.51.100.10", 9001), True),
        (("198.51.100.10", 9002), False),
        (("198.51.100.11", 9001), False),
    ],
)
def test_s6_4_is_from_beacon(frm: Addr | None, expected: bool) -> None:
    assert rig(beacon=BEACON).manager.is_from_beacon(frm) is expected
    assert rig().manager.is_from_beacon(frm) is False


# -- relay flag and pin, relay receipts --------------------------------------------


def test_s8_15_set_relay_peer() -> None:
    m = rig().manager
    m.set_relay_peer(42, True)
    assert m.is_relay_peer(42)
    assert not m.is_relay_pinned(42)
    assert m.relay_peer_count() == 1
    assert m.relay_peer_ids() == [42]


def test_s8_16_pinned_peer_not_cleared_by_direct_packet() -> None:
    m = rig().manager
    m.set_relay_peer_pinned(7, True)
    assert m.clear_relay_on_direct(7, ("198.51.100.7", 4000)) is False
    assert m.is_relay_peer(7)
    assert m.is_relay_pinned(7)


def test_s8_17_pin_then_unpin() -> None:
    m = rig().manager
    m.set_relay_peer_pinned(9, True)
    assert m.is_relay_pinned(9)
    m.set_relay_peer_pinned(9, False)
    assert not m.is_relay_pinned(9)
    assert not m.is_relay_peer(9)
    assert m.relay_peer_count() == 1  # entry kept as False


def test_s8_18_three_direct_packets_clear_unpinned_relay() -> None:
    m = rig().manager
    m.set_relay_peer(13, True)
    src = ("203.0.113.13", 5000)
    assert m.clear_relay_on_direct(13, src) is False
    assert m.clear_relay_on_direct(13, src) is False
    assert m.is_relay_peer(13)
    assert m.clear_relay_on_direct(13, src) is True
    assert not m.is_relay_peer(13)
    assert m.peer_routing(13).direct_clears == 0


def test_s8_19_remove_peer_wipes_state() -> None:
    m = rig().manager
    m.set_relay_peer_pinned(5, True)
    m.record_direct_recv(5, 1.0)
    m.remove_peer(5)
    assert not m.is_relay_peer(5)
    assert not m.is_relay_pinned(5)
    assert not m.has_direct_recv(5)


def test_unpin_keeps_flag_until_direct_clears() -> None:
    """D19: unpin drops the pin only; three direct receipts then clear the flag."""
    m = rig(beacon=BEACON).manager
    m.set_relay_peer_pinned(3, True)
    m.unpin_relay_peer(3)
    assert m.is_relay_peer(3)
    assert not m.is_relay_pinned(3)
    src = ("203.0.113.3", 1)
    assert [m.clear_relay_on_direct(3, src) for _ in range(3)] == [False, False, True]
    m.unpin_relay_peer(99)  # absent: no-op
    assert 99 not in m.peer_ids()


def test_s8_37_mark_relay_activated_with_crypto() -> None:
    m = rig().manager
    assert m.mark_relay_activated_if_had_crypto(123, True) == (True, True, True)
    assert m.is_relay_peer(123)
    assert not m.is_relay_pinned(123)
    # D5: should_alias stays true when already relay; not newly activated.
    assert m.mark_relay_activated_if_had_crypto(123, True) == (True, False, True)


def test_s8_38_mark_relay_activated_without_crypto() -> None:
    m = rig().manager
    assert m.mark_relay_activated_if_had_crypto(123, False) == (True, False, False)
    assert not m.is_relay_peer(123)
    assert m.relay_peer_count() == 0


def test_s8_52_admit_relay_from_beacon() -> None:
    m = rig().manager
    assert not m.is_relay_peer(77)
    assert not m.is_relay_pinned(77)
    assert m.admit_relay_from_beacon(77) is True
    assert m.is_relay_peer(77)
    assert m.is_relay_pinned(77)


def test_s9_08_count_keeps_cleared_entry() -> None:
    m = rig().manager
    m.set_relay_peer(1, True)
    m.set_relay_peer(2, True)
    for _ in range(3):
        m.clear_relay_on_direct(1, PEER_ADDR)
    assert m.relay_peer_count() == 2
    assert m.relay_peer_ids() == [2]


def test_s9_09_relay_cap() -> None:
    """The cap edge cases with the real cap of 4096 keys."""
    r = rig(beacon=BEACON)
    m = r.manager
    for node in range(1, MAX_RELAY_PEERS + 1):
        m.set_relay_peer(node, True)
    m.set_relay_peer(1, False)  # a False entry still holds a slot
    assert m.relay_peer_count() == MAX_RELAY_PEERS
    new = 100_000
    results = [m.handle_send_error(new, refused()) for _ in range(5)]
    assert results == [(False, 1), (False, 2), (False, 3), (False, 4), (False, 5)]
    assert not m.is_relay_peer(new)
    assert m.admit_relay_from_beacon(new) is False
    assert not m.is_relay_pinned(new)
    assert m.relay_peer_count() == MAX_RELAY_PEERS
    assert m.admit_relay_from_beacon(1) is True  # existing False key is admitted (D6)
    m.set_relay_peer(2, False)
    assert m.mark_relay_activated_if_had_crypto(2, True) == (False, False, False)  # D6
    assert not m.is_relay_peer(2)
    assert m.mark_relay_activated_if_had_crypto(new, True) == (False, False, False)
    assert m.mark_relay_activated_if_had_crypto(3, True) == (True, False, True)  # already relay
    # The blackhole flip is not capped.
    m.record_outbound_send(new, r.clock())
    r.clock.advance(9)
    assert [m.maybe_flip_blackhole(new)[1] for _ in range(3)] == [False, False, True]
    assert m.relay_peer_count() == MAX_RELAY_PEERS + 1
    m.remove_peer(new)
    m.remove_peer(4)
    assert m.relay_peer_count() == MAX_RELAY_PEERS - 1
    assert m.admit_relay_from_beacon(new) is True


def test_s9_10_set_relay_false_keeps_pin() -> None:
    r = rig(beacon=BEACON)
    m = r.manager
    m.set_relay_peer_pinned(8, True)
    m.set_relay_peer(8, False)
    assert not m.is_relay_peer(8)
    assert m.is_relay_pinned(8)
    for _ in range(4):
        assert m.clear_relay_on_direct(8, PEER_ADDR) is False
    assert m.peer_routing(8).direct_clears == 0
    m.record_outbound_send(8, r.clock())
    r.clock.advance(8.5)
    flips = [m.maybe_flip_blackhole(8) for _ in range(3)]
    assert [f[1] for f in flips] == [False, False, True]
    assert m.is_relay_peer(8)
    assert m.is_relay_pinned(8)


# -- clear_relay_on_direct and the miss count -------------------------------------


def silent_peer(r: Rig, node: int, misses: int) -> None:
    """Give ``node`` ``misses`` blackhole misses (beacon set, 9 s of silence)."""
    r.manager.record_direct_recv(node, r.clock() - 9)
    for expected in range(1, misses + 1):
        assert r.manager.maybe_flip_blackhole(node)[3] == expected


def test_s8_22_direct_packet_resets_misses() -> None:
    r = rig(beacon=BEACON)
    silent_peer(r, 4, 2)
    assert r.manager.clear_relay_on_direct(4, PEER_ADDR) is False
    assert r.manager.blackhole_miss_count(4) == 0


def test_beacon_sourced_packet_resets_misses_without_counting() -> None:
    r = rig(beacon=BEACON)
    r.manager.set_relay_peer(4, True)
    r.manager.set_relay_peer(5, False)
    silent_peer(r, 5, 2)
    for _ in range(3):
        assert r.manager.clear_relay_on_direct(4, BEACON) is False
    assert r.manager.is_relay_peer(4)
    assert r.manager.peer_routing(4).direct_clears == 0
    assert r.manager.clear_relay_on_direct(5, ("::ffff:198.51.100.10", 9001)) is False
    assert r.manager.blackhole_miss_count(5) == 0


def test_s9_15_none_source_changes_nothing() -> None:
    r = rig(beacon=BEACON)
    silent_peer(r, 4, 2)
    assert r.manager.clear_relay_on_direct(4, None) is False
    assert r.manager.blackhole_miss_count(4) == 2


@pytest.mark.parametrize("frm", [("0.0.0.0", 0), ("203.0.113.5", 0), ("0.0.0.0", 9), ("::", 9)])
def test_d21_placeholder_source_ignored(frm: Addr) -> None:
    m = rig().manager  # no beacon: upstream would treat 0.0.0.0:0 as a direct receipt
    m.set_relay_peer(7, True)
    for _ in range(3):
        assert m.clear_relay_on_direct(7, frm) is False
    assert m.is_relay_peer(7)
    assert m.peer_routing(7).direct_clears == 0
    assert m.peer_ids() == [7]  # not even a miss-count entry
    r = rig(beacon=BEACON)
    silent_peer(r, 8, 2)
    assert r.manager.clear_relay_on_direct(8, frm) is False
    assert r.manager.blackhole_miss_count(8) == 2


def test_no_beacon_any_real_source_is_direct() -> None:
    m = rig().manager
    m.set_relay_peer(7, True)
    assert [m.clear_relay_on_direct(7, BEACON) for _ in range(3)] == [False, False, True]


# -- accessors ----------------------------------------------------------------------


def test_s8_49_empty_manager_accessors() -> None:
    m = rig().manager
    assert m.last_direct_recv(1) is None
    assert not m.has_direct_recv(1)
    assert m.last_outbound_send(1) is None
    assert m.send_err_count(1) == 0
    assert m.blackhole_miss_count(1) == 0
    m.clear_send_err_count(1)
    assert m.peer_state_entries() == 0


def test_s8_50_record_round_trip_and_non_icmp_error() -> None:
    m = rig().manager
    m.record_direct_recv(2, 5.0)
    m.record_outbound_send(2, 6.0)
    assert m.has_direct_recv(2)
    assert m.last_direct_recv(2) == 5.0
    assert m.last_outbound_send(2) == 6.0
    m.record_direct_recv(2, 1.0)  # no monotonicity check
    assert m.last_direct_recv(2) == 1.0
    assert m.handle_send_error(2, OSError("generic")) == (False, 0)
    assert m.send_err_count(2) == 0


def test_s8_51_outbound_baseline_misses_then_beacon_reset() -> None:
    r = rig(beacon=BEACON)
    m = r.manager
    m.record_outbound_send(11, r.clock() - 20)
    assert m.maybe_flip_blackhole(11) == (False, False, 20.0, 1)
    assert m.maybe_flip_blackhole(11) == (False, False, 20.0, 2)
    assert not m.is_relay_peer(11)
    assert m.clear_relay_on_direct(11, BEACON) is False
    assert m.blackhole_miss_count(11) == 0


def test_s9_17_first_outbound_send_recreated_and_remove_deletes_all_maps() -> None:
    r = rig(beacon=BEACON)
    m = r.manager
    m.record_outbound_send(5, 1.0)
    m.record_outbound_send(5, 2.0)
    assert m.peer_routing(5).first_outbound_send == 1.0
    m.record_direct_recv(5, 3.0)
    assert m.peer_routing(5).first_outbound_send is None
    m.record_outbound_send(5, 4.0)
    assert m.peer_routing(5).first_outbound_send == 4.0
    # Touch all eight maps.
    m.set_relay_peer_pinned(5, True)
    m.set_relay_peer(5, True)
    m.set_relay_peer_pinned(6, False)
    m.handle_send_error(5, refused())
    m.clear_relay_on_direct(5, PEER_ADDR)  # misses = 0 (pinned: no clear count)
    m.unpin_relay_peer(5)
    m.clear_relay_on_direct(5, PEER_ADDR)  # direct clear count 1
    m.set_relay_peer_pinned(5, True)
    snap = m.peer_routing(5)
    assert snap == PeerRouting(5, True, True, 0, 1, 1, 3.0, 4.0, 4.0)
    assert m.peer_state_entries() == 8 + 1  # eight maps for 5, the relay entry of 6
    assert m.peer_ids() == [5, 6]
    m.remove_peer(5)
    assert m.peer_state_entries() == 1
    assert m.peer_ids() == [6]
    assert m.peer_routing(5) == PeerRouting(5, False, False, 0, 0, 0, None, None, None)
    m.remove_peer(5)  # absent: no-op


# -- blackhole heuristic -----------------------------------------------------------


def test_s8_20_no_beacon_no_flip() -> None:
    r = rig()
    r.manager.record_direct_recv(1, r.clock() - 3600)
    for _ in range(5):
        assert r.manager.maybe_flip_blackhole(1) == (False, False, 0.0, 0)
    assert r.manager.blackhole_miss_count(1) == 0


def test_s8_21_receipt_9s_old_flips_on_third_miss() -> None:
    r = rig(beacon=BEACON)
    m = r.manager
    m.record_direct_recv(1, r.clock() - 9)
    assert m.maybe_flip_blackhole(1) == (False, False, 9.0, 1)
    assert m.maybe_flip_blackhole(1) == (False, False, 9.0, 2)
    assert m.maybe_flip_blackhole(1) == (True, True, 9.0, 3)
    assert m.is_relay_peer(1)
    assert m.is_relay_pinned(1)
    assert m.blackhole_miss_count(1) == 0
    assert m.maybe_flip_blackhole(1) == (True, False, 0.0, 0)


def test_results_are_named_tuples() -> None:
    r = rig(beacon=BEACON)
    m = r.manager
    m.record_direct_recv(1, r.clock() - 9)
    check = m.maybe_flip_blackhole(1)
    assert check == BlackholeCheck(should_relay=False, flipped=False, silent_for=9.0, misses=1)
    assert (check.misses, check.silent_for) == (1, 9.0)
    admission = m.mark_relay_activated_if_had_crypto(2, True)
    assert admission == RelayAdmission(admitted=True, newly_activated=True, should_alias=True)
    should_relay, *_ = m.maybe_flip_blackhole(2)  # still unpacks like the seed's tuples
    assert should_relay
    counted = m.handle_send_error(3, refused())
    assert counted == SendErrorCount(flipped=False, errors=1)
    assert counted.errors == 1


def test_s8_23_fresh_receipt_never_misses() -> None:
    r = rig(beacon=BEACON)
    r.manager.record_direct_recv(1, r.clock())
    for _ in range(5):
        assert r.manager.maybe_flip_blackhole(1) == (False, False, 0.0, 0)
    assert r.manager.blackhole_miss_count(1) == 0


@pytest.mark.parametrize(
    ("age", "miss"), [(8.0, False), (8.000001, True), (-5.0, False), (0.0, False)]
)
def test_s9_16_threshold_boundary(age: float, miss: bool) -> None:
    r = rig(beacon=BEACON)
    r.manager.record_direct_recv(1, r.clock() - age)
    assert r.manager.maybe_flip_blackhole(1)[3] == (1 if miss else 0)


def test_relay_flag_short_circuits_even_without_beacon() -> None:
    m = rig().manager
    m.set_relay_peer(1, True)
    assert m.maybe_flip_blackhole(1) == (True, False, 0.0, 0)


def test_no_baseline_no_miss() -> None:
    assert rig(beacon=BEACON).manager.maybe_flip_blackhole(1) == (False, False, 0.0, 0)


def test_misses_not_reset_when_silence_ends() -> None:
    """D10: silence dropping back under 8 s does not reset the count."""
    r = rig(beacon=BEACON)
    silent_peer(r, 1, 2)
    r.manager.record_direct_recv(1, r.clock())
    assert r.manager.maybe_flip_blackhole(1) == (False, False, 0.0, 0)
    assert r.manager.blackhole_miss_count(1) == 2


def test_blackhole_timeline_through_write_frame() -> None:
    """The timeline: frames 1-2 after 8 s go direct (misses), frame 3 relays."""
    r = rig(beacon=BEACON)
    m = r.manager
    assert m.write_frame(1, PEER_ADDR, b"PILS0").was_relay is False  # baseline
    r.clock.advance(8)
    assert m.write_frame(1, PEER_ADDR, b"PILS1").was_relay is False
    assert m.blackhole_miss_count(1) == 0
    r.clock.advance(0.5)
    assert m.write_frame(1, PEER_ADDR, b"PILS2").was_relay is False
    assert m.write_frame(1, PEER_ADDR, b"PILS3").was_relay is False
    assert m.blackhole_miss_count(1) == 2
    m.clear_relay_on_direct(1, BEACON)  # a relayed decrypt restarts the count
    assert m.write_frame(1, PEER_ADDR, b"PILS4").was_relay is False
    assert m.write_frame(1, PEER_ADDR, b"PILS5").was_relay is False
    out = m.write_frame(1, PEER_ADDR, b"PILS6")
    assert out == SendOutcome(9 + 5, True)
    assert m.is_relay_pinned(1)
    assert [dst for _, dst in r.sock.sent] == [PEER_ADDR] * 6 + [BEACON]


# -- send errors (ICMP) ------------------------------------------------------------


def test_s8_24_econnrefused_flips_on_third() -> None:
    m = rig().manager
    assert m.handle_send_error(1, refused()) == (False, 1)
    assert m.handle_send_error(1, refused()) == (False, 2)
    assert m.handle_send_error(1, refused()) == (True, 3)
    assert m.is_relay_peer(1)
    assert m.is_relay_pinned(1)
    assert m.send_err_count(1) == 0
    # Already relay: the counter keeps growing without flipping again.
    assert [m.handle_send_error(1, refused()) for _ in range(4)] == [
        (False, 1),
        (False, 2),
        (False, 3),
        (False, 4),
    ]


def test_s8_25_generic_error_never_flips() -> None:
    m = rig().manager
    for _ in range(6):
        assert m.handle_send_error(1, OSError(errno.EIO, "generic")) == (False, 0)
    assert not m.is_relay_peer(1)
    assert m.peer_state_entries() == 0


def _wrapped(inner: BaseException, *, cause: bool) -> RuntimeError:
    outer = RuntimeError("send failed")
    if cause:
        outer.__cause__ = inner
    else:
        outer.__context__ = inner
    return outer


def _cycle() -> OSError:
    a = OSError(errno.EIO, "a")
    b = OSError(errno.EIO, "b")
    a.__context__ = b
    b.__context__ = a
    return a


@pytest.mark.parametrize(
    ("err", "icmp"),
    [
        (ConnectionRefusedError(), True),
        (OSError(errno.ECONNREFUSED, "refused"), True),
        (OSError(errno.EHOSTUNREACH, "host"), True),
        (OSError(errno.ENETUNREACH, "net"), True),
        (_wrapped(OSError(errno.EHOSTUNREACH, "x"), cause=True), True),
        (_wrapped(ConnectionRefusedError(), cause=False), True),
        (BlockingIOError(errno.EAGAIN, "again"), False),
        (OSError(errno.EMSGSIZE, "too big"), False),
        (OSError(errno.ENOBUFS, "no bufs"), False),
        (OSError(errno.EBADF, "closed"), False),
        (ValueError("x"), False),
        (_cycle(), False),
        (None, False),
    ],
    ids=lambda v: type(v).__name__ if not isinstance(v, bool) else str(v),
)
def test_s9_22_icmp_classification(err: BaseException | None, icmp: bool) -> None:
    assert is_icmp_unreachable(err) is icmp
    m = rig().manager
    assert m.handle_send_error(1, err) == ((False, 1) if icmp else (False, 0))


# -- write_frame -------------------------------------------------------------------


def test_s8_26_direct_write() -> None:
    r = rig()
    frame = b"PILS\x00\x01\x02\x03"
    out = r.manager.write_frame(1, PEER_ADDR, frame)
    assert out == SendOutcome(8, False)
    assert r.sock.sent == [(frame, PEER_ADDR)]
    assert r.manager.last_outbound_send(1) == r.clock()


def test_s8_27_pinned_peer_relays_through_beacon() -> None:
    r = rig(beacon=BEACON)
    r.manager.set_relay_peer_pinned(0x11223344, True)
    frame = b"PILSdata"
    out = r.manager.write_frame(0x11223344, None, frame)
    assert out == SendOutcome(9 + len(frame), True)
    [(data, dst)] = r.sock.sent
    assert dst == BEACON
    assert data[0] == 0x05
    assert data[1:5] == OUR_ID.to_bytes(4, "big")
    assert data[5:9] == bytes.fromhex("11223344")
    assert data[9:] == frame


def test_s8_29_no_beacon_no_address() -> None:
    r = rig()
    with pytest.raises(NoAddressError) as info:
        r.manager.write_frame(5, None, b"PILS")
    assert str(info.value) == "routing: no address for peer: node 5"
    assert info.value.node_id == 5
    assert isinstance(info.value, RoutingError)
    assert r.sock.attempts == 0
    assert str(NoAddressError()) == "routing: no address for peer"


def test_s8_30_counters_after_direct_write() -> None:
    r = rig()
    counters = Counters()
    r.manager.write_frame(1, PEER_ADDR, b"abc", counters)
    assert (counters.pkts_sent, counters.bytes_sent) == (1, 3)


def test_relay_counters_include_header() -> None:
    r = rig(beacon=BEACON)
    r.manager.set_relay_peer(1, True)
    counters = Counters()
    r.manager.write_frame(1, None, b"abc", counters)
    assert (counters.pkts_sent, counters.bytes_sent) == (1, 12)


def test_s9_11_relay_flag_without_beacon_goes_direct() -> None:
    r = rig()
    r.manager.set_relay_peer(1, True)
    assert r.manager.write_frame(1, PEER_ADDR, b"PILS") == SendOutcome(4, False)
    assert r.sock.sent == [(b"PILS", PEER_ADDR)]
    with pytest.raises(NoAddressError):
        r.manager.write_frame(1, None, b"PILS")


def test_s9_12_d20_relay_send_failure_not_charged_to_peer() -> None:
    r = rig(beacon=BEACON)
    r.manager.set_relay_peer(1, True)
    r.sock.fail_with(refused())
    counters = Counters()
    for _ in range(4):
        with pytest.raises(SendError) as info:
            r.manager.write_frame(1, None, b"PILS", counters)
        assert info.value.was_relay is True
        assert info.value.errno == errno.ECONNREFUSED
        assert isinstance(info.value.__cause__, ConnectionRefusedError)
        assert is_icmp_unreachable(info.value)
    assert r.manager.send_err_count(1) == 0
    assert r.manager.last_outbound_send(1) is None
    assert counters == Counters()


def test_direct_send_failure_counted_and_flips() -> None:
    r = rig(beacon=BEACON)
    r.sock.fail_with(OSError(errno.EHOSTUNREACH, "No route to host"))
    for expected in (1, 2):
        with pytest.raises(SendError, match="No route") as info:
            r.manager.write_frame(1, PEER_ADDR, b"PILS")
        assert info.value.was_relay is False
        assert isinstance(info.value, OSError)
        assert r.manager.send_err_count(1) == expected
    with pytest.raises(OSError, match="No route"):
        r.manager.write_frame(1, PEER_ADDR, b"PILS")
    assert r.manager.is_relay_peer(1)
    assert r.manager.is_relay_pinned(1)
    r.sock.fail_with(None)
    assert r.manager.write_frame(1, PEER_ADDR, b"PILS").was_relay is True


def test_direct_send_non_icmp_failure_not_counted() -> None:
    r = rig()
    r.sock.fail_with(BlockingIOError(errno.EAGAIN, "again"))
    with pytest.raises(SendError) as info:
        r.manager.write_frame(1, PEER_ADDR, b"PILS")
    assert info.value.errno == errno.EAGAIN
    assert isinstance(info.value.__cause__, BlockingIOError)
    assert r.manager.send_err_count(1) == 0


def test_s9_13_socket_unset_on_both_paths() -> None:
    r = rig(beacon=BEACON)
    r.manager.set_socket(None)
    counters = Counters()
    with pytest.raises(SocketNotSetError, match="routing: socket not set"):
        r.manager.write_frame(1, PEER_ADDR, b"PILS", counters)
    r.manager.set_relay_peer(2, True)
    with pytest.raises(SocketNotSetError):
        r.manager.write_frame(2, None, b"PILS", counters)
    assert counters == Counters()
    assert r.manager.last_outbound_send(1) is None
    assert r.manager.last_outbound_send(2) is None
    r.manager.register_with_beacon()
    r.manager.request_hole_punch(2)
    assert r.sock.attempts == 0


def test_s9_13_no_address_checked_before_socket() -> None:
    r = rig()
    r.manager.set_socket(None)
    with pytest.raises(NoAddressError):
        r.manager.write_frame(1, None, b"PILS")


def test_s9_14_unset_local_id_is_zero() -> None:
    r = rig(beacon=BEACON)
    r.manager.set_local_node_id_fn(None)
    r.manager.set_relay_peer(2, True)
    r.manager.write_frame(2, None, b"PILS")
    r.manager.register_with_beacon()
    r.manager.request_hole_punch(2)
    assert [d for d, _ in r.sock.sent] == [
        bytes.fromhex("05 00000000 00000002") + b"PILS",
        bytes.fromhex("01 00000000"),
        bytes.fromhex("03 00000000 00000002"),
    ]


def test_frame_to_beacon_address_goes_raw_when_not_relay() -> None:
    r = rig(beacon=BEACON)
    assert r.manager.write_frame(3, BEACON, b"PILS") == SendOutcome(4, False)
    assert r.sock.sent == [(b"PILS", BEACON)]


@pytest.mark.parametrize("bad", [-1, 2**32, True, 1.0, "1"])
def test_node_id_validation(bad: object) -> None:
    m = rig().manager
    with pytest.raises(UsageError, match="node ID out of range"):
        m.write_frame(bad, PEER_ADDR, b"PILS")  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        m.set_relay_peer(bad, True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="node ID"):
        m.maybe_flip_blackhole(bad)  # type: ignore[arg-type]


def test_boundary_node_ids_accepted() -> None:
    r = rig(beacon=BEACON)
    for node in (0, 2**32 - 1):
        r.manager.set_relay_peer(node, True)
        assert r.manager.write_frame(node, None, b"P").was_relay
    assert r.sock.sent[1][0][5:9] == b"\xff\xff\xff\xff"


# -- beacon messages ---------------------------------------------------------------------


def test_s8_31_register_without_beacon() -> None:
    r = rig()
    r.manager.register_with_beacon()
    assert r.sock.sent == []


def test_s8_32_register_with_beacon() -> None:
    r = rig(beacon=BEACON)
    r.manager.register_with_beacon()
    assert r.sock.sent == [(b"\x01" + OUR_ID.to_bytes(4, "big"), BEACON)]


def test_register_send_error_raised() -> None:
    r = rig(beacon=BEACON)
    r.sock.fail_with(OSError(errno.ENETUNREACH, "down"))
    with pytest.raises(OSError, match="down"):
        r.manager.register_with_beacon()
    with pytest.raises(OSError, match="down"):
        r.manager.request_hole_punch(1)


def test_s8_33_request_hole_punch() -> None:
    r = rig(beacon=BEACON)
    r.manager.request_hole_punch(0x01020304)
    assert r.sock.sent == [
        (b"\x03" + OUR_ID.to_bytes(4, "big") + bytes.fromhex("01020304"), BEACON)
    ]


def test_s8_34_request_hole_punch_without_beacon() -> None:
    r = rig()
    r.manager.request_hole_punch(5)
    assert r.sock.sent == []


def test_s8_35_ipv4_punch_command() -> None:
    r = rig()
    sent = r.manager.handle_punch_command(bytes.fromhex("04 cb007132 115c"))
    assert sent == 3
    assert r.sock.sent == [(b"PILP", ("203.0.113.50", 4444))] * 3


@pytest.mark.parametrize(
    "data", [None, b"", b"\x05", b"\x04\x01\x02\x03", b"\x10" + bytes(8)], ids=repr
)
def test_s8_36_malformed_punch_commands(data: bytes | None) -> None:
    r = rig()
    assert r.manager.handle_punch_command(data) == 0
    assert r.sock.attempts == 0


def test_s9_20_punch_command_trailing_bytes_and_ipv6() -> None:
    r = rig()
    assert r.manager.handle_punch_command(bytes.fromhex("04 cb007132 115c ffff")) == 3
    v6 = bytes.fromhex("10 20010db8000000000000000000000009 2329")
    assert len(v6) == 19
    assert r.manager.handle_punch_command(v6) == 3
    assert r.sock.sent[3:] == [(b"PILP", ("2001:db8::9", 9001))] * 3
    assert {dst for _, dst in r.sock.sent[:3]} == {("203.0.113.50", 4444)}


def test_punch_command_without_socket_or_with_errors(caplog: pytest.LogCaptureFixture) -> None:
    r = rig()
    r.manager.set_socket(None)
    assert r.manager.handle_punch_command(bytes.fromhex("04 cb007132 115c")) == 0
    r.manager.set_socket(r.sock)
    r.sock.fail_with(OSError(errno.EPERM, "nope"))
    with caplog.at_level(logging.INFO, logger="natroute.routing.manager"):
        assert r.manager.handle_punch_command(bytes.fromhex("04 cb007132 115c")) == 0
    assert r.sock.attempts == 3
    assert caplog.records == []  # D26: nothing at info level
    r.sock.fail_with(None)
    with caplog.at_level(logging.DEBUG, logger="natroute.routing.manager"):
        assert r.manager.handle_punch_command(bytes.fromhex("04 cb007132 115c")) == 3
    assert [rec.getMessage() for rec in caplog.records] == ["punch_sent"]
    assert caplog.records[0].levelno == logging.DEBUG


# -- D17: bounded per-peer maps ---------------------------------------------------------


def test_d17_per_peer_maps_capped() -> None:
    r = rig(beacon=BEACON, config=ManagerConfig(max_peer_state=2))
    m = r.manager
    m.record_direct_recv(1, 1.0)
    m.record_direct_recv(2, 1.0)
    m.record_direct_recv(3, 1.0)  # refused
    assert m.has_direct_recv(1)
    assert m.has_direct_recv(2)
    assert not m.has_direct_recv(3)
    assert m.untracked_count() == 1
    m.record_direct_recv(1, 2.0)  # existing entries still update
    assert m.last_direct_recv(1) == 2.0
    m.record_outbound_send(4, 1.0)
    m.record_outbound_send(5, 1.0)
    m.record_outbound_send(6, 1.0)  # refused by both send maps
    assert m.last_outbound_send(6) is None
    assert m.peer_routing(6).first_outbound_send is None
    assert m.untracked_count() == 3
    for node in (7, 8):
        m.handle_send_error(node, refused())
    assert m.handle_send_error(9, refused()) == (False, 0)
    assert m.untracked_count() == 4
    m.clear_relay_on_direct(10, PEER_ADDR)
    m.clear_relay_on_direct(11, PEER_ADDR)
    m.set_relay_peer(12, True)
    assert m.clear_relay_on_direct(12, PEER_ADDR) is False  # miss map full
    assert m.untracked_count() == 5
    # The miss map is full too: a silent peer outside it cannot count misses.
    m.record_outbound_send(4, r.clock() - 20)
    assert m.maybe_flip_blackhole(4) == (False, False, 0.0, 0)
    assert m.untracked_count() == 6
    m.remove_peer(10)
    assert m.maybe_flip_blackhole(4)[3] == 1


def test_config_validation() -> None:
    with pytest.raises(UsageError, match="blackhole_threshold"):
        ManagerConfig(blackhole_threshold=-1.0)
    with pytest.raises(UsageError, match="blackhole_threshold"):
        ManagerConfig(blackhole_threshold=float("nan"))
    with pytest.raises(UsageError, match="max_relay_peers"):
        ManagerConfig(max_relay_peers=0)
    with pytest.raises(UsageError, match="punch_repeat"):
        ManagerConfig(punch_repeat=True)
    assert ManagerConfig(blackhole_threshold=0.0).blackhole_threshold == 0.0


def test_config_thresholds_are_used() -> None:
    cfg = ManagerConfig(
        blackhole_threshold=1.0,
        blackhole_misses_required=1,
        direct_clears_required=1,
        send_err_threshold=1,
        punch_repeat=2,
    )
    r = rig(beacon=BEACON, config=cfg)
    m = r.manager
    m.record_direct_recv(1, r.clock() - 1.5)
    assert m.maybe_flip_blackhole(1) == (True, True, 1.5, 1)
    m.set_relay_peer_pinned(1, False)
    m.set_relay_peer(1, True)
    assert m.clear_relay_on_direct(1, PEER_ADDR) is True
    assert m.handle_send_error(2, refused()) == (True, 1)
    assert m.handle_punch_command(bytes.fromhex("04 cb007132 115c")) == 2
