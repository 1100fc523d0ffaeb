"""The engine's parts one by one: frames, candidates, budget, look-ups, waiting, observer, paths."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from natroute.registry.client import Resolved
from natroute.routing.errors import UsageError
from natroute.routing.types import Addr
from natroute.sidecar.budget import BudgetConfig, DialBudget
from natroute.sidecar.candidates import (
    MAX_REMOTE_CANDIDATES,
    Candidate,
    CandidateKind,
    SelfAddrs,
    address_problem,
)
from natroute.sidecar.crypto import PeerCipher
from natroute.sidecar.frames import (
    MAX_WIRE_CANDIDATES,
    PROBE_LEN,
    InnerType,
    decode_candidates,
    decode_inner,
    encode_call_me_maybe,
    encode_probe,
    probe_nonce,
)
from natroute.sidecar.interfaces import host_candidates
from natroute.sidecar.lookups import LookupConfig, LookupOutcome, Lookups, Refusal
from natroute.sidecar.model import DropReason, NatType, NodeConfig
from natroute.sidecar.observer import Observer, Outcome, classify_nat
from natroute.sidecar.peers import TRANSITIONS, Path, PathReason, Peer, PeerEvent, PeerTable
from natroute.sidecar.registrylink import peer_info
from natroute.sidecar.waiting import WaitingRoom

from .fakenet import public_key

H = CandidateKind.HOST
S = CandidateKind.SRFLX
P = CandidateKind.PRFLX

# -- frames ---------------------------------------------------------------------------


def test_probe_frames() -> None:
    probe = encode_probe(InnerType.PROBE, 0x0102030405060708)
    assert len(probe) == PROBE_LEN
    assert decode_inner(probe) == (InnerType.PROBE, bytes(range(1, 9)))
    assert probe_nonce(bytes(range(1, 9))) == 0x0102030405060708
    assert decode_inner(b"\x01payload") == (InnerType.DATA, b"payload")
    assert decode_inner(b"\x02") == (InnerType.KEEPALIVE, b"")
    for bad in (b"", b"\x00", b"\x09", probe[:-1], probe + b"x", b"\x04"):
        assert decode_inner(bad) is None


CMM_GOLDEN = [
    ([], b"\x05\x00"),
    (
        [Candidate(("192.0.2.1", 4000), H)],
        b"\x05\x01\x01\x04\xc0\x00\x02\x01\x0f\xa0",
    ),
    (
        [Candidate(("2001:db8::1", 443), P), Candidate(("198.51.100.7", 1), S)],
        b"\x05\x02\x03\x06"
        + bytes.fromhex("20010db8000000000000000000000001")
        + b"\x01\xbb\x02\x04\xc6\x33\x64\x07\x00\x01",
    ),
]


@pytest.mark.parametrize(("candidates", "wire"), CMM_GOLDEN)
def test_call_me_maybe_golden(candidates: list[Candidate], wire: bytes) -> None:
    assert encode_call_me_maybe(candidates) == wire
    assert decode_inner(wire) == (InnerType.CALL_ME_MAYBE, wire[1:])
    assert decode_candidates(wire[1:]) == candidates
    for cut in range(1, len(wire) - 1):
        if cut != 1:
            assert decode_inner(wire[:cut]) is None or cut == len(wire)


def test_call_me_maybe_refuses_what_it_cannot_read() -> None:
    ok = encode_call_me_maybe([Candidate(("192.0.2.1", 4000), H)])[1:]
    assert decode_candidates(b"") is None
    assert decode_candidates(bytes([MAX_WIRE_CANDIDATES + 1])) is None
    assert decode_candidates(ok + b"\x00") is None  # trailing bytes
    assert decode_candidates(b"\x01\x09\x04" + bytes(6)) is None  # unknown kind
    assert decode_candidates(b"\x01\x01\x05" + bytes(6)) is None  # unknown family
    assert decode_candidates(b"\x01\x01\x04\xc0\x00\x02\x01\x00\x00") is None  # port 0
    many = [Candidate(("192.0.2.1", 1000 + i), H) for i in range(MAX_WIRE_CANDIDATES + 5)]
    assert len(decode_candidates(encode_call_me_maybe(many)[1:]) or []) == MAX_WIRE_CANDIDATES


@given(st.binary(max_size=80))
def test_any_plaintext_decodes_or_is_refused(data: bytes) -> None:
    decoded = decode_inner(data)
    assert decoded is None or decoded[0] == data[0]


# -- candidates ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("addr", "loopback", "problem"),
    [
        (("198.51.100.7", 4000), False, None),
        (("10.0.0.1", 4000), False, None),
        (("198.18.2.10", 4000), False, None),
        (("2001:db8::1", 4000), False, None),
        (("198.51.100.7", 0), False, "port_zero"),
        (("0.0.0.0", 4000), False, "unspecified"),
        (("::", 4000), True, "unspecified"),
        (("224.0.0.251", 5353), False, "multicast"),
        (("ff02::1", 4000), False, "multicast"),
        (("255.255.255.255", 4000), False, "broadcast"),
        (("240.0.0.1", 4000), False, "reserved"),
        (("127.0.0.1", 4100), False, "loopback"),
        (("127.0.0.1", 4100), True, None),
        (("169.254.1.1", 4000), False, "link_local"),
        (("fe80::1", 4000), False, "link_local"),
        (("::ffff:127.0.0.1", 4000), False, "loopback"),
        (("example.com", 4000), False, "not_ip"),
    ],
)
def test_address_problem(addr: Addr, loopback: bool, problem: str | None) -> None:
    assert address_problem(addr, allow_loopback=loopback) == problem


def test_self_addrs_exact_and_wildcard_sockets() -> None:
    own = SelfAddrs([("127.0.0.1", 4100), ("0.0.0.0", 4000)], local_ips=["198.18.1.10"])
    assert ("127.0.0.1", 4100) in own
    assert ("::ffff:127.0.0.1", 4100) in own
    assert ("127.0.0.2", 4100) not in own
    assert ("198.18.1.10", 4000) in own
    assert ("127.0.0.5", 4000) in own  # loopback reaches a wildcard socket
    assert ("198.18.1.11", 4000) not in own
    assert ("198.18.1.10", 4001) not in own
    own.set_local_ips(["198.18.1.11"])
    assert ("198.18.1.11", 4000) in own
    assert "not an address" not in own
    assert ("not-an-ip", 4000) not in own


def test_host_candidates() -> None:
    ips = ["127.0.0.1", "198.18.1.10", "10.0.0.2", "fe80::1", "2001:db8::5", "169.254.0.3"]
    assert host_candidates(("0.0.0.0", 4000), ips) == [
        Candidate(("10.0.0.2", 4000), H),
        Candidate(("198.18.1.10", 4000), H),
    ]
    assert [c.addr for c in host_candidates(("::", 4000), ips)][-1] == ("2001:db8::5", 4000)
    assert host_candidates(("127.0.0.1", 5000), ips) == [Candidate(("127.0.0.1", 5000), H)]
    assert host_candidates(("0.0.0.0", 1), [f"10.0.0.{i}" for i in range(20)])[-1].addr == (
        "10.0.0.7",
        1,
    )


def test_peer_info_from_a_resolve_answer() -> None:
    key = public_key(X25519PrivateKey.generate())
    resolved = Resolved(
        7, "198.51.100.7:4000", ("10.0.0.2:4000", "bad"), False, b"e" * 32, key, 0.0, 0
    )
    info = peer_info(resolved)
    assert info is not None
    assert info.candidates == (
        Candidate(("10.0.0.2", 4000), H),
        Candidate(("198.51.100.7", 4000), S),
    )
    relay_only = Resolved(7, "203.0.113.1:9001", (), True, b"e" * 32, key, 0.0, 0)
    assert peer_info(relay_only).candidates == ()  # type: ignore[union-attr]
    assert peer_info(Resolved(7, None, (), False, b"e" * 32, None, 0.0, 0)) is None


# -- the dialling budget ----------------------------------------------------------------


def test_budget_caps_unverified_addresses_per_address_peer_and_in_all() -> None:
    budget = DialBudget(
        BudgetConfig(
            per_addr_burst=100,
            per_addr_rate=10,
            per_peer_burst=150,
            per_peer_rate=10,
            total_burst=180,
            total_rate=10,
        )
    )
    a, b, c = ("198.51.100.1", 1), ("198.51.100.2", 2), ("198.51.100.3", 3)
    assert budget.allow(a, 100, 0.0, peer=1)
    assert not budget.allow(a, 1, 0.0, peer=1)  # the address is spent
    assert not budget.allow(b, 60, 0.0, peer=1)  # the peer is spent (100 + 60 > 150)
    assert budget.allow(c, 50, 0.0, peer=2)
    assert not budget.allow(("198.51.100.4", 4), 40, 0.0, peer=3)  # all are spent (180)
    assert budget.refused == 3
    assert budget.allow(a, 10, 1.0, peer=1)  # refilled a little
    budget.verify(b)
    assert budget.is_verified(b)
    assert budget.allow(b, 10_000, 1.0, peer=1)  # verified: no limit
    budget.sweep(1000.0)


def test_budget_forgets_the_oldest_verified_address() -> None:
    budget = DialBudget(BudgetConfig(max_tracked=2))
    for i in range(3):
        budget.verify((f"198.51.100.{i}", 1))
    budget.verify(("198.51.100.2", 1))
    assert not budget.is_verified(("198.51.100.0", 1))
    assert budget.is_verified(("198.51.100.1", 1))


# -- look-ups and waiting ------------------------------------------------------------------


def test_lookups_queue_pace_and_remember() -> None:
    lookups = Lookups(LookupConfig(queue_cap=3, max_in_flight=2, rate=1, burst=2, negative_ttl=10))
    for node_id in (1, 2, 3):
        assert lookups.request(node_id, 0.0) is None
    assert lookups.request(1, 0.0) is None  # already queued: nothing new
    assert lookups.request(4, 0.0) is Refusal.QUEUE_FULL
    assert lookups.start(0.0) == [1, 2]  # two in flight
    assert lookups.start(0.0) == []
    assert lookups.is_pending(1)
    assert lookups.request(1, 0.0) is None  # in flight: nothing new
    lookups.finished(1, LookupOutcome.UNKNOWN, 0.0)
    lookups.finished(2, LookupOutcome.FAILED, 0.0)
    assert lookups.start(0.0) == []  # the pace: burst 2 used
    assert lookups.start(1.0) == [3]
    assert lookups.request(1, 5.0) is Refusal.KNOWN_UNKNOWN
    assert lookups.known_unknown(1, 5.0)
    assert lookups.request(2, 1.0) is Refusal.TOO_SOON
    assert lookups.request(2, 4.0) is None
    assert not lookups.known_unknown(1, 11.0)
    lookups.cancel(2)
    assert lookups.queued == 0
    lookups.finished(3, LookupOutcome.FOUND, 2.0)
    assert (lookups.in_flight, lookups.started) == (0, 3)


def test_lookups_negative_cache_is_capped() -> None:
    lookups = Lookups(LookupConfig(negative_cap=2, rate=0))
    for node_id in (1, 2, 3):
        lookups.request(node_id, 0.0)
    lookups.start(0.0)
    for node_id in (1, 2, 3):
        lookups.finished(node_id, LookupOutcome.UNKNOWN, 0.0)
    assert not lookups.known_unknown(1, 0.0)
    assert lookups.known_unknown(3, 0.0)


def test_waiting_room_caps_and_expires() -> None:
    room = WaitingRoom(
        NodeConfig(
            max_pending_senders=2, pending_per_peer=2, pending_inbound_per_sender=1, hold_timeout=5
        )
    )
    assert room.hold_out(1, b"a", 0.0) is None
    assert room.hold_out(1, b"b", 0.0) is None
    assert room.hold_out(1, b"c", 0.0) is DropReason.PENDING_FULL  # the oldest goes
    assert room.hold_out(2, b"x", 1.0) is None
    assert room.hold_out(3, b"y", 1.0) is DropReason.PENDING_FULL  # too many destinations
    assert room.hold_in(7, (b"f", ("192.0.2.1", 1), False), 0.0) is None
    assert room.hold_in(7, (b"g", ("192.0.2.1", 1), False), 0.0) is DropReason.PENDING_FULL
    assert room.hold_in(8, (b"h", ("192.0.2.1", 1), True), 2.0) is None
    assert room.hold_in(9, (b"i", ("192.0.2.1", 1), True), 2.0) is DropReason.UNKNOWN_SENDER
    assert (room.held_frames, room.held_payloads) == (2, 3)
    assert sorted(room.node_ids()) == [1, 2, 7, 8]
    assert room.take(1) == ([], [b"b", b"c"])
    assert room.expire(5.5) == 1  # node 7's frame waited too long
    assert room.waiting(8)
    assert room.forget(8) == 1
    assert room.expire(100.0) == 1


# -- the observer -------------------------------------------------------------------------

BEACON_1: Addr = ("203.0.113.1", 9001)
BEACON_2: Addr = ("203.0.113.2", 9001)
LOCAL: Addr = ("10.0.0.2", 4000)
E1: Addr = ("198.51.100.9", 4000)
E2: Addr = ("198.51.100.9", 5000)


@pytest.mark.parametrize(
    ("observed", "expected"),
    [
        ([], NatType.UNKNOWN),
        ([LOCAL], NatType.NONE),
        ([LOCAL, LOCAL], NatType.NONE),
        ([E1], NatType.UNKNOWN),
        ([E1, E1], NatType.ENDPOINT_INDEPENDENT),
        ([E1, ("::ffff:198.51.100.9", 4000)], NatType.ENDPOINT_INDEPENDENT),
        ([E1, E2], NatType.ENDPOINT_DEPENDENT),
    ],
)
def test_classify_nat(observed: list[Addr], expected: NatType) -> None:
    assert classify_nat(LOCAL, observed) is expected


def test_observer_takes_replies_only_from_beacons_it_asked() -> None:
    obs = Observer(reply_window=2.0, local=LOCAL)
    change, _ = obs.reply(BEACON_1, E1, 0.0)
    assert change.outcome is Outcome.IGNORED
    obs.sent("b1", BEACON_1, 0.0)
    assert obs.expecting(BEACON_1, 1.0)
    assert not obs.expecting(BEACON_2, 1.0)
    change, _ = obs.reply(("::ffff:203.0.113.1", 9001), E1, 0.5)
    assert (change.outcome, obs.endpoint) == (Outcome.FIRST, E1)
    assert obs.rtt["b1"] == pytest.approx(0.5)
    assert obs.reply(BEACON_1, E1, 3.0)[0].outcome is Outcome.IGNORED  # too late


def test_observer_classifies_with_two_beacons_and_notices_spoofing() -> None:
    obs = Observer(local=LOCAL)
    obs.start_check(("b1", "b2"), 0.0)
    obs.sent("b1", BEACON_1, 0.0)
    obs.sent("b2", BEACON_2, 0.0)
    assert obs.checking
    assert obs.reply(BEACON_1, E1, 0.1)[1] is None
    verdict = obs.reply(BEACON_2, E2, 0.1)[1]
    assert verdict is not None
    assert verdict.nat_type is NatType.ENDPOINT_DEPENDENT
    assert verdict.observations == {"b1": E1, "b2": E2}
    # one beacon answering twice, differently: somebody spoofs; the verdict stays
    obs.start_check(("b1", "b2"), 1.0)
    obs.sent("b1", BEACON_1, 1.0)
    obs.sent("b2", BEACON_2, 1.0)
    obs.reply(BEACON_1, E1, 1.1)
    obs.reply(BEACON_1, E2, 1.1)
    assert obs.reply(BEACON_2, E1, 1.1)[1] is None
    assert obs.inconclusive == 1
    assert obs.verdict is verdict
    # a check that hears one beacon only ends at its timeout
    obs.start_check(("b1", "b2"), 2.0)
    obs.sent("b1", BEACON_1, 2.0)
    obs.reply(BEACON_1, E1, 2.1)
    late = obs.finish_check(4.0)
    assert late is not None
    assert late.nat_type is NatType.UNKNOWN
    assert obs.finish_check(5.0) is None


def test_observer_adopts_a_confirmed_endpoint_and_rejects_a_contradicted_one() -> None:
    obs = Observer(reply_window=1.0, local=LOCAL)
    obs.sent("b1", BEACON_1, 0.0)
    obs.reply(BEACON_1, E1, 0.1)
    # a changed endpoint is only pending ...
    assert obs.reply(BEACON_1, E2, 0.2)[0].outcome is Outcome.PENDING
    assert obs.wants_confirmation
    assert obs.unconfirmed == E2
    obs.confirmation_sent(0.3)
    obs.sent("b1", BEACON_1, 0.3)
    assert obs.reply(BEACON_1, E2, 0.4)[0].outcome is Outcome.PENDING
    assert obs.tick(0.5) is None  # the window is still open
    change = obs.tick(1.4)
    assert change is not None
    assert (change.outcome, obs.endpoint) == (Outcome.ADOPTED, E2)
    # ... and a contradiction (the old endpoint seen again) rejects it
    obs.sent("b1", BEACON_1, 2.0)
    obs.reply(BEACON_1, E1, 2.1)
    obs.confirmation_sent(2.1)
    obs.sent("b1", BEACON_1, 2.1)
    obs.reply(BEACON_1, E2, 2.2)  # the real beacon still sees E2
    obs.reply(BEACON_1, E1, 2.2)
    change = obs.tick(3.2)
    assert change is not None
    assert change.outcome is Outcome.REJECTED
    assert obs.endpoint == E2
    assert obs.rejected == 1
    # an answer to a discover sent before the change proves nothing
    obs.sent("b1", BEACON_1, 4.0)
    obs.reply(BEACON_1, E1, 4.1)
    obs.reply(BEACON_1, E1, 4.2)  # no confirming discover went out
    change = obs.tick(6.0)
    assert change is not None
    assert change.outcome is Outcome.REJECTED


# -- paths ----------------------------------------------------------------------------------


def make_peer(node_id: int = 9) -> Peer:
    key = X25519PrivateKey.from_private_bytes(b"\x05" * 32)
    other = public_key(X25519PrivateKey.from_private_bytes(b"\x06" * 32))
    return Peer(node_id, PeerCipher(1, key, node_id, other, 1), False, 0.0)


@given(st.lists(st.sampled_from(list(PeerEvent)), max_size=30))
def test_every_path_change_follows_the_table(events: list[PeerEvent]) -> None:
    peer = make_peer()
    for i, event in enumerate(events):
        before = peer.path
        if (before, event) in TRANSITIONS:
            peer.apply(event, PathReason.CHECKING, float(i))
            assert peer.path is TRANSITIONS[(before, event)]
        else:
            with pytest.raises(UsageError):
                peer.apply(event, PathReason.CHECKING, float(i))
            assert peer.path is before
    assert len(peer.events) <= 32


def test_every_state_can_be_left_for_the_relay() -> None:
    for state in (None, *Path):
        assert TRANSITIONS[(state, PeerEvent.START)] is Path.RELAY


def test_candidates_are_capped_and_learnt_ones_give_way() -> None:
    peer = make_peer()
    for i in range(MAX_REMOTE_CANDIDATES):
        assert peer.add_candidate(Candidate((f"198.51.100.{i}", 1), P), 0.0) is not None
    assert peer.add_candidate(Candidate(("198.51.100.200", 1), P), 0.0) is None
    announced = peer.add_candidate(Candidate(("198.51.100.201", 1), H), 0.0)
    assert announced is not None
    assert len(peer.candidates) == MAX_REMOTE_CANDIDATES
    assert ("198.51.100.0", 1) not in peer.candidates  # the oldest learnt one went
    again = peer.add_candidate(Candidate(("198.51.100.5", 1), S), 0.0)
    assert again is not None
    assert again.candidate.kind is S  # announced beats learnt


def test_best_candidate_is_the_fastest_fresh_answer() -> None:
    peer = make_peer()
    lan = peer.add_candidate(Candidate(("10.0.0.2", 4000), H), 0.0)
    wan = peer.add_candidate(Candidate(("198.51.100.2", 4000), S), 0.0)
    assert lan is not None
    assert wan is not None
    assert peer.best_candidate(since=0.0) is None
    wan.note_rtt(0.020, 1.0)
    lan.note_rtt(0.002, 1.0)
    assert peer.best_candidate(since=0.0) is lan
    lan.failed_at = 2.0
    assert peer.best_candidate(since=0.0) is wan
    assert peer.best_candidate(since=1.5) is None  # stale answers do not count


def test_peer_table_indexes_candidates() -> None:
    table = PeerTable(max_peers=1)
    peer = make_peer(1)
    assert table.add(peer)
    assert not table.add(make_peer(2))
    table.index(peer, ("198.51.100.1", 1))
    assert table.by_addr(("198.51.100.1", 1)) is peer
    table.unindex(make_peer(3), ("198.51.100.1", 1))  # not its address: kept
    assert table.by_addr(("198.51.100.1", 1)) is peer
    peer.add_candidate(Candidate(("198.51.100.1", 1), H), 0.0)
    assert table.remove(1) is peer
    assert table.by_addr(("198.51.100.1", 1)) is None
    assert table.remove(1) is None
