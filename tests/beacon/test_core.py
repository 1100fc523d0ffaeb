"""Unit tests of the beacon core with a fake clock (docs/protocol.md, "Beacon rules"; D15, D27)."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from natroute.beacon.auth import sign_discover
from natroute.beacon.config import BeaconConfig, RateLimit
from natroute.beacon.core import BeaconCore, source_key
from natroute.beacon.stats import DropReason
from natroute.routing.types import Addr
from natroute.routing.wire import (
    Discover,
    DiscoverReply,
    PunchCommand,
    PunchRequest,
    RelayDeliver,
    Sync,
    decode_message,
    encode_message,
    encode_relay,
)

from .fakes import FakeClock

A: Addr = ("198.51.100.1", 4000)
B: Addr = ("203.0.113.7", 5000)
C: Addr = ("192.0.2.9", 6000)
PEER: Addr = ("192.0.2.100", 9001)
PEER2: Addr = ("192.0.2.101", 9001)
WALL = 1_800_000_000.0
NO_LIMIT = RateLimit(rate=0, burst=0)


def make(strict: bool = True, **kw: object) -> tuple[BeaconCore, FakeClock]:
    wall = FakeClock(WALL)
    cfg = BeaconConfig(beacon_id=7, strict=strict, **kw)  # type: ignore[arg-type]
    return BeaconCore(cfg, wall_clock=wall), FakeClock()


def disc(node_id: int, extra: bytes = b"") -> bytes:
    return encode_message(Discover(node_id, extra))


def drops(core: BeaconCore, reason: DropReason) -> int:
    return core.counters.drops[reason]


def test_discover_records_and_replies_with_observed_endpoint() -> None:
    core, clock = make()
    out = core.handle_datagram(disc(11), A, clock())
    assert out == [(encode_message(DiscoverReply(A)), A)]
    entry = core.nodes.get(11, clock())
    assert entry is not None
    assert entry.addr == A
    assert core.counters.registrations == 1


def test_discover_ipv6_reply_and_mapped_source_is_canonical() -> None:
    core, clock = make()
    v6: Addr = ("2001:db8::5", 7000)
    out = core.handle_datagram(disc(12), v6, clock())
    assert decode_message(out[0][0]) == DiscoverReply(v6)
    assert len(out[0][0]) == 20
    out = core.handle_datagram(disc(13), ("::ffff:198.51.100.1", 4000), clock())
    assert out == [(encode_message(DiscoverReply(A)), A)]
    assert len(out[0][0]) == 8


def test_node_id_zero_gets_reply_but_is_never_recorded() -> None:
    core, clock = make()
    out = core.handle_datagram(disc(0), A, clock())
    assert out == [(encode_message(DiscoverReply(A)), A)]
    assert len(core.nodes) == 0


def test_keepalive_from_same_address_refreshes_entry() -> None:
    core, clock = make(node_ttl=10.0)
    core.handle_datagram(disc(11), A, clock())
    clock.advance(9)
    core.handle_datagram(disc(11), A, clock())
    clock.advance(9)
    assert core.nodes.get(11, clock()) is not None
    clock.advance(1)
    assert core.nodes.get(11, clock()) is None
    core.sweep(clock())
    assert len(core.nodes) == 0
    assert core.counters.expired_nodes == 1


def test_strict_rejects_unsigned_takeover_but_still_replies() -> None:
    core, clock = make()
    core.handle_datagram(disc(11), A, clock())
    out = core.handle_datagram(disc(11), B, clock())
    assert out == [(encode_message(DiscoverReply(B)), B)]
    entry = core.nodes.get(11, clock())
    assert entry is not None
    assert entry.addr == A
    assert drops(core, DropReason.TAKEOVER_REJECTED) == 1


def test_takeover_allowed_after_entry_expired() -> None:
    core, clock = make(node_ttl=10.0)
    core.handle_datagram(disc(11), A, clock())
    clock.advance(10)
    core.handle_datagram(disc(11), B, clock())
    entry = core.nodes.get(11, clock())
    assert entry is not None
    assert entry.addr == B


def test_non_strict_takeover_overwrites_like_upstream() -> None:
    core, clock = make(strict=False)
    key = Ed25519PrivateKey.generate()
    core.handle_datagram(disc(11, sign_discover(key, 11, int(WALL))), A, clock())
    core.handle_datagram(disc(11), B, clock())
    entry = core.nodes.get(11, clock())
    assert entry is not None
    assert entry.addr == B
    assert entry.pubkey is None


def test_signed_discover_binds_key_and_only_that_key_moves_it() -> None:
    core, clock = make()
    key = Ed25519PrivateKey.generate()
    other = Ed25519PrivateKey.generate()
    core.handle_datagram(disc(11, sign_discover(key, 11, int(WALL))), A, clock())
    entry = core.nodes.get(11, clock())
    assert entry is not None
    assert entry.pubkey is not None
    assert core.counters.authenticated == 1
    # Unsigned keepalive from the registered address is fine.
    core.handle_datagram(disc(11), A, clock())
    # Another key, or no key, from elsewhere cannot take it.
    core.handle_datagram(disc(11, sign_discover(other, 11, int(WALL) + 1)), B, clock())
    core.handle_datagram(disc(11), B, clock())
    assert core.nodes.get(11, clock()) is entry
    assert entry.addr == A
    assert drops(core, DropReason.TAKEOVER_REJECTED) == 2
    # The bound key, with a newer time, moves it.
    core.handle_datagram(disc(11, sign_discover(key, 11, int(WALL) + 2)), B, clock())
    assert entry.addr == B


def test_replayed_signed_discover_cannot_move_mapping() -> None:
    core, clock = make()
    key = Ed25519PrivateKey.generate()
    signed = disc(11, sign_discover(key, 11, int(WALL)))
    core.handle_datagram(signed, A, clock())
    core.handle_datagram(signed, B, clock())
    entry = core.nodes.get(11, clock())
    assert entry is not None
    assert entry.addr == A
    assert drops(core, DropReason.TAKEOVER_REJECTED) == 1


def test_unsigned_entry_is_taken_over_by_nobody_until_it_expires() -> None:
    """Issue 10 item 5: no signature, from another address, moves an unsigned entry."""
    core, clock = make(node_ttl=10.0)
    key = Ed25519PrivateKey.generate()
    core.handle_datagram(disc(11), A, clock())
    for offset in range(3):
        out = core.handle_datagram(disc(11, sign_discover(key, 11, int(WALL) + offset)), B, clock())
        assert out == [(encode_message(DiscoverReply(B)), B)]  # still answered (STUN)
    core.handle_datagram(encode_message(PunchRequest(11, 11)), B, clock())
    entry = core.nodes.get(11, clock())
    assert entry is not None
    assert (entry.addr, entry.pubkey) == (A, None)
    assert drops(core, DropReason.TAKEOVER_REJECTED) == 4
    # The real node's keepalives go on; once it stops, the ID is free after the TTL.
    clock.advance(9)
    core.handle_datagram(disc(11), A, clock())
    clock.advance(9)
    assert core.handle_datagram(disc(11), B, clock())
    assert entry.addr == A
    clock.advance(1)
    core.handle_datagram(disc(11, sign_discover(key, 11, int(WALL) + 9)), B, clock())
    moved = core.nodes.get(11, clock())
    assert moved is not None
    assert moved.addr == B
    assert moved.pubkey is not None


def test_unsigned_node_whose_mapping_changed_reregisters_after_expiry() -> None:
    """An upstream (unsigned) node behind a NAT that remapped it: back after the TTL."""
    core, clock = make(node_ttl=10.0)
    core.handle_datagram(disc(11), A, clock())
    clock.advance(5)
    core.handle_datagram(disc(11), B, clock())  # new mapping: refused while A is live
    assert drops(core, DropReason.TAKEOVER_REJECTED) == 1
    clock.advance(5)
    core.handle_datagram(disc(11), B, clock())
    entry = core.nodes.get(11, clock())
    assert entry is not None
    assert entry.addr == B


def test_first_signature_from_the_registered_address_binds_the_key() -> None:
    core, clock = make()
    key = Ed25519PrivateKey.generate()
    other = Ed25519PrivateKey.generate()
    core.handle_datagram(disc(11), A, clock())
    core.handle_datagram(disc(11, sign_discover(key, 11, int(WALL))), A, clock())
    entry = core.nodes.get(11, clock())
    assert entry is not None
    bound = entry.pubkey
    assert bound is not None
    assert core.nodes.signed == 1
    # A different key from the registered address is a keepalive; the binding stays.
    core.handle_datagram(disc(11, sign_discover(other, 11, int(WALL) + 5)), A, clock())
    assert entry.pubkey == bound
    assert entry.auth_time == int(WALL)
    # The bound key moves it; another key does not.
    core.handle_datagram(disc(11, sign_discover(other, 11, int(WALL) + 6)), B, clock())
    assert entry.addr == A
    core.handle_datagram(disc(11, sign_discover(key, 11, int(WALL) + 6)), B, clock())
    assert entry.addr == B


def test_require_signature_answers_unsigned_discovers_without_recording() -> None:
    core, clock = make(require_signature=True)
    key = Ed25519PrivateKey.generate()
    assert core.handle_datagram(disc(11), A, clock()) == [(encode_message(DiscoverReply(A)), A)]
    assert core.nodes.get(11, clock()) is None
    assert core.handle_datagram(encode_message(PunchRequest(11, 12)), A, clock()) == []
    assert drops(core, DropReason.UNSIGNED_REFUSED) == 2
    core.handle_datagram(disc(11, sign_discover(key, 11, int(WALL))), A, clock())
    assert core.nodes.get(11, clock()) is not None
    core.handle_datagram(disc(11), A, clock())  # unsigned keepalives of a signed entry are fine
    assert drops(core, DropReason.UNSIGNED_REFUSED) == 2


def test_non_strict_signed_move_rebinds_to_the_new_key() -> None:
    core, clock = make(strict=False)
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    core.handle_datagram(disc(11, sign_discover(key, 11, int(WALL))), A, clock())
    core.handle_datagram(disc(11, sign_discover(other, 11, int(WALL))), B, clock())
    entry = core.nodes.get(11, clock())
    assert entry is not None
    assert entry.addr == B
    assert entry.pubkey == sign_discover(other, 11, 0)[:32]


def test_signed_keepalive_binds_key_on_unsigned_entry_at_same_address() -> None:
    core, clock = make()
    key = Ed25519PrivateKey.generate()
    core.handle_datagram(disc(11), A, clock())
    core.handle_datagram(disc(11, sign_discover(key, 11, int(WALL))), A, clock())
    entry = core.nodes.get(11, clock())
    assert entry is not None
    assert entry.pubkey is not None


def test_binding_expires_with_the_entry() -> None:
    core, clock = make(node_ttl=10.0)
    key = Ed25519PrivateKey.generate()
    core.handle_datagram(disc(11, sign_discover(key, 11, int(WALL))), A, clock())
    clock.advance(11)
    core.handle_datagram(disc(11), B, clock())
    entry = core.nodes.get(11, clock())
    assert entry is not None
    assert entry.addr == B
    assert entry.pubkey is None


@pytest.mark.parametrize(
    ("extra", "time_offset"),
    [
        pytest.param(b"bad-signature", 0, id="bad_signature"),
        pytest.param(b"", 121, id="stale"),
    ],
)
def test_invalid_signature_is_counted_and_treated_as_unsigned(
    extra: bytes, time_offset: int
) -> None:
    core, clock = make()
    key = Ed25519PrivateKey.generate()
    trailer = sign_discover(key, 11, int(WALL) + time_offset)
    if extra:
        trailer = trailer[:40] + bytes(64)
    out = core.handle_datagram(disc(11, trailer), A, clock())
    assert out == [(encode_message(DiscoverReply(A)), A)]
    entry = core.nodes.get(11, clock())
    assert entry is not None
    assert entry.pubkey is None
    assert drops(core, DropReason.AUTH_INVALID) == 1


def test_other_trailers_are_ignored() -> None:
    core, clock = make()
    core.handle_datagram(disc(11, bytes(32)), A, clock())
    assert core.nodes.get(11, clock()) is not None
    assert drops(core, DropReason.AUTH_INVALID) == 0


def test_table_full_drops_new_node_without_reply_and_evicts_expired() -> None:
    core, clock = make(node_cap=2, node_ttl=10.0)
    core.handle_datagram(disc(1), A, clock())
    clock.advance(5)
    core.handle_datagram(disc(2), B, clock())
    assert core.handle_datagram(disc(3), C, clock()) == []
    assert drops(core, DropReason.TABLE_FULL) == 1
    # Node 0 still gets its reply; known nodes still refresh.
    assert len(core.handle_datagram(disc(0), C, clock())) == 1
    assert len(core.handle_datagram(disc(2), B, clock())) == 1
    clock.advance(5)  # node 1 expired: its slot is reused
    assert len(core.handle_datagram(disc(3), C, clock())) == 1
    assert core.nodes.get(1, clock()) is None
    assert core.nodes.get(3, clock()) is not None


def test_discover_rate_limited_per_source_ip() -> None:
    core, clock = make(discover_limit=RateLimit(rate=1.0, burst=2.0))
    assert core.handle_datagram(disc(1), A, clock())
    assert core.handle_datagram(disc(2), (A[0], 4001), clock())
    assert core.handle_datagram(disc(3), A, clock()) == []
    assert core.handle_datagram(disc(4), B, clock())
    assert drops(core, DropReason.RATE_LIMITED_DISCOVER) == 1
    clock.advance(1)
    assert core.handle_datagram(disc(3), A, clock())


def test_punch_sends_commands_to_both_sides() -> None:
    core, clock = make()
    core.handle_datagram(disc(1), A, clock())
    core.handle_datagram(disc(2), B, clock())
    out = core.handle_datagram(encode_message(PunchRequest(1, 2)), A, clock())
    assert out == [
        (encode_message(PunchCommand(B)), A),
        (encode_message(PunchCommand(A)), B),
    ]
    assert core.counters.punches == 1


def test_punch_registers_unknown_requester() -> None:
    core, clock = make()
    core.handle_datagram(disc(2), B, clock())
    out = core.handle_datagram(encode_message(PunchRequest(1, 2, b"trailer")), A, clock())
    assert len(out) == 2
    entry = core.nodes.get(1, clock())
    assert entry is not None
    assert entry.addr == A


def test_punch_drops() -> None:
    core, clock = make(node_cap=1)
    core.handle_datagram(disc(2), B, clock())
    assert core.handle_datagram(encode_message(PunchRequest(0, 2)), A, clock()) == []
    assert drops(core, DropReason.PUNCH_REQUESTER_UNKNOWN) == 1
    # Requester cannot be recorded: table full.
    assert core.handle_datagram(encode_message(PunchRequest(1, 2)), A, clock()) == []
    assert drops(core, DropReason.TABLE_FULL) == 1
    # Requester registered elsewhere: strict refuses the takeover.
    assert core.handle_datagram(encode_message(PunchRequest(2, 2)), A, clock()) == []
    assert drops(core, DropReason.TAKEOVER_REJECTED) == 1
    # Unknown target.
    assert core.handle_datagram(encode_message(PunchRequest(2, 9)), B, clock()) == []
    assert drops(core, DropReason.PUNCH_TARGET_UNKNOWN) == 1


def test_punch_non_strict_moves_requester() -> None:
    core, clock = make(strict=False)
    core.handle_datagram(disc(1), A, clock())
    core.handle_datagram(disc(2), B, clock())
    out = core.handle_datagram(encode_message(PunchRequest(1, 2)), C, clock())
    assert out[1] == (encode_message(PunchCommand(C)), B)


def test_punch_rate_limited() -> None:
    core, clock = make(punch_limit=RateLimit(rate=1.0, burst=1.0))
    core.handle_datagram(disc(1), A, clock())
    core.handle_datagram(disc(2), B, clock())
    assert core.handle_datagram(encode_message(PunchRequest(1, 2)), A, clock())
    assert core.handle_datagram(encode_message(PunchRequest(1, 2)), A, clock()) == []
    assert drops(core, DropReason.RATE_LIMITED_PUNCH) == 1


def test_relay_delivers_to_registered_destination() -> None:
    core, clock = make()
    core.handle_datagram(disc(1), A, clock())
    core.handle_datagram(disc(2), B, clock())
    out = core.handle_datagram(encode_relay(1, 2, b"PILSdata"), A, clock())
    assert out == [(encode_message(RelayDeliver(1, b"PILSdata")), B)]
    assert core.counters.relayed_packets == 1
    assert core.counters.relayed_bytes == 8


def test_relay_empty_payload_is_relayed_as_five_bytes() -> None:
    core, clock = make()
    core.handle_datagram(disc(1), A, clock())
    core.handle_datagram(disc(2), B, clock())
    out = core.handle_datagram(encode_relay(1, 2, b""), A, clock())
    assert out == [(b"\x06\x00\x00\x00\x01", B)]


def test_strict_relay_requires_sender_registered_at_source() -> None:
    core, clock = make()
    core.handle_datagram(disc(1), A, clock())
    core.handle_datagram(disc(2), B, clock())
    assert core.handle_datagram(encode_relay(1, 2, b"x"), C, clock()) == []
    assert core.handle_datagram(encode_relay(0, 2, b"x"), A, clock()) == []
    assert drops(core, DropReason.RELAY_SENDER_MISMATCH) == 2


def test_non_strict_relay_trusts_claimed_sender() -> None:
    core, clock = make(strict=False)
    core.handle_datagram(disc(2), B, clock())
    out = core.handle_datagram(encode_relay(0, 2, b"x"), C, clock())
    assert out == [(encode_message(RelayDeliver(0, b"x")), B)]


def test_relay_unknown_destination_and_too_large() -> None:
    core, clock = make(max_relay_payload=4)
    core.handle_datagram(disc(1), A, clock())
    assert core.handle_datagram(encode_relay(1, 9, b"PILS"), A, clock()) == []
    assert drops(core, DropReason.RELAY_UNKNOWN_DST) == 1
    assert core.handle_datagram(encode_relay(1, 9, b"PILSx"), A, clock()) == []
    assert drops(core, DropReason.RELAY_TOO_LARGE) == 1


def test_relay_default_payload_limit_is_65535() -> None:
    core, clock = make()
    core.handle_datagram(disc(1), A, clock())
    core.handle_datagram(disc(2), B, clock())
    assert core.handle_datagram(encode_relay(1, 2, bytes(65535)), A, clock())
    assert core.handle_datagram(encode_relay(1, 2, bytes(65536)), A, clock()) == []


def test_relay_budget_per_source_packets_and_bytes() -> None:
    core, clock = make(
        relay_packet_limit=RateLimit(rate=1.0, burst=2.0),
        relay_byte_limit=RateLimit(rate=100.0, burst=100.0),
        max_relay_payload=100,
    )
    core.handle_datagram(disc(1), A, clock())
    core.handle_datagram(disc(2), B, clock())
    assert core.handle_datagram(encode_relay(1, 2, b"a"), A, clock())
    assert core.handle_datagram(encode_relay(1, 2, b"a"), A, clock())
    assert core.handle_datagram(encode_relay(1, 2, b"a"), A, clock()) == []
    clock.advance(5)  # packet tokens refilled; 100 byte tokens minus 2 used
    assert core.handle_datagram(encode_relay(1, 2, bytes(60)), A, clock())
    assert core.handle_datagram(encode_relay(1, 2, bytes(60)), A, clock()) == []
    assert drops(core, DropReason.RATE_LIMITED_RELAY) == 2
    # Other sources have their own budget.
    assert core.handle_datagram(encode_relay(2, 1, b"a"), B, clock())


def test_unlimited_relay_budget() -> None:
    core, clock = make(relay_packet_limit=NO_LIMIT, relay_byte_limit=NO_LIMIT)
    core.handle_datagram(disc(1), A, clock())
    core.handle_datagram(disc(2), B, clock())
    for _ in range(20_000):
        assert core.handle_datagram(encode_relay(1, 2, b"a"), A, clock())


def test_sync_from_unknown_source_ignored() -> None:
    core, clock = make()
    assert core.handle_datagram(encode_message(Sync(9, (5,))), PEER, clock()) == []
    assert drops(core, DropReason.SYNC_UNKNOWN_PEER) == 1
    assert core.gossip.lookup(5, clock()) is None


def test_relay_forwarded_to_gossiping_peer_unchanged() -> None:
    core, clock = make()
    core.set_static_peers([PEER])
    core.handle_datagram(disc(1), A, clock())
    assert core.handle_datagram(encode_message(Sync(9, (5, 6))), PEER, clock()) == []
    assert core.counters.syncs_received == 1
    frame = encode_relay(1, 5, b"PILSx")
    assert core.handle_datagram(frame, A, clock()) == [(frame, PEER)]
    assert core.counters.forwarded_packets == 1
    assert core.counters.forwarded_bytes == 5


def test_local_registration_wins_over_gossip() -> None:
    core, clock = make()
    core.set_static_peers([PEER])
    core.handle_datagram(encode_message(Sync(9, (2,))), PEER, clock())
    core.handle_datagram(disc(1), A, clock())
    core.handle_datagram(disc(2), B, clock())
    out = core.handle_datagram(encode_relay(1, 2, b"x"), A, clock())
    assert out == [(encode_message(RelayDeliver(1, b"x")), B)]


def test_silent_local_node_announced_by_a_peer_is_handed_off() -> None:
    """A node that moved to another beacon stops refreshing here: relays follow it."""
    core, clock = make(handoff_after=30.0, gossip_ttl=3600.0)
    core.set_static_peers([PEER])
    core.handle_datagram(disc(1), A, clock())
    core.handle_datagram(disc(2), B, clock())
    core.handle_datagram(encode_message(Sync(9, (2,))), PEER, clock())
    frame = encode_relay(1, 2, b"x")
    clock.advance(30.0)
    core.handle_datagram(disc(1), A, clock())  # the sender keeps its entry fresh
    assert core.handle_datagram(frame, A, clock()) == [
        (encode_message(RelayDeliver(1, b"x")), B)
    ]  # exactly handoff_after: still local
    clock.advance(0.5)
    core.handle_datagram(disc(1), A, clock())
    assert core.handle_datagram(frame, A, clock()) == [(frame, PEER)]  # moved: forwarded
    core.handle_datagram(disc(2), B, clock())  # back here: local again
    assert core.handle_datagram(frame, A, clock()) == [(encode_message(RelayDeliver(1, b"x")), B)]


def test_relay_from_peer_is_delivered_locally_and_never_forwarded() -> None:
    core, clock = make()
    core.set_listed_peers([PEER, PEER2])
    core.handle_datagram(disc(2), B, clock())
    # Inconsistent gossip: PEER2 claims node 5, and PEER forwards us a frame for 5.
    core.handle_datagram(encode_message(Sync(10, (5,))), PEER2, clock())
    assert core.handle_datagram(encode_relay(1, 5, b"x"), PEER, clock()) == []
    assert drops(core, DropReason.RELAY_HOP_LIMIT) == 1
    # From a peer the claimed sender is not checked (the peer checked it).
    out = core.handle_datagram(encode_relay(1, 2, b"x"), PEER, clock())
    assert out == [(encode_message(RelayDeliver(1, b"x")), B)]


def test_gossip_entries_expire_if_not_refreshed() -> None:
    core, clock = make(gossip_ttl=30.0)
    core.set_static_peers([PEER])
    core.handle_datagram(disc(1), A, clock())
    core.handle_datagram(encode_message(Sync(9, (5,))), PEER, clock())
    clock.advance(30)
    assert core.handle_datagram(encode_relay(1, 5, b"x"), A, clock()) == []
    core.sweep(clock())
    assert len(core.gossip) == 0


def test_gossip_moves_node_to_latest_announcing_peer() -> None:
    core, clock = make()
    core.set_static_peers([PEER, PEER2])
    core.handle_datagram(encode_message(Sync(9, (5,))), PEER, clock())
    core.handle_datagram(encode_message(Sync(10, (5,))), PEER2, clock())
    assert core.gossip.lookup(5, clock()) == PEER2


def test_gossip_full_is_counted() -> None:
    core, clock = make(gossip_cap=1)
    core.set_static_peers([PEER])
    core.handle_datagram(encode_message(Sync(9, (5, 6))), PEER, clock())
    assert drops(core, DropReason.SYNC_GOSSIP_FULL) == 1
    assert core.gossip.lookup(5, clock()) == PEER


def test_gossip_datagrams_list_live_nodes_to_each_peer() -> None:
    core, clock = make(node_ttl=10.0, sync_ids_per_datagram=2)
    assert core.gossip_datagrams(clock()) == []
    core.set_static_peers([PEER])
    core.set_listed_peers([("::ffff:192.0.2.101", 9001)])
    out = core.gossip_datagrams(clock())
    assert out == [
        (encode_message(Sync(7, ())), PEER),
        (encode_message(Sync(7, ())), PEER2),
    ]
    core.handle_datagram(disc(1), A, clock())
    clock.advance(5)
    core.handle_datagram(disc(2), B, clock())
    core.handle_datagram(disc(3), C, clock())
    out = core.gossip_datagrams(clock())
    to_peer = [decode_message(d) for d, dst in out if dst == PEER]
    assert to_peer == [Sync(7, (3, 2)), Sync(7, (1,))]
    clock.advance(5)  # node 1 expired: not gossiped
    out = core.gossip_datagrams(clock())
    assert [decode_message(d) for d, dst in out if dst == PEER] == [Sync(7, (3, 2))]
    assert core.counters.syncs_sent == 2 + 4 + 2


def test_a_new_node_is_gossiped_early_and_early_rounds_are_spaced() -> None:
    core, clock = make(early_gossip_spacing=0.25, sync_ids_per_datagram=2)
    core.set_static_peers([PEER])
    assert core.early_gossip_datagrams(clock()) == []  # nothing new
    core.handle_datagram(disc(1), A, clock())
    out = core.early_gossip_datagrams(clock())
    assert [decode_message(d) for d, _ in out] == [Sync(7, (1,))]  # the full list, at once
    assert core.early_gossip_datagrams(clock()) == []  # one round per news
    core.handle_datagram(disc(1), A, clock())  # a keepalive is no news
    assert core.early_gossip_datagrams(clock()) == []
    core.handle_datagram(disc(2), B, clock())
    core.handle_datagram(disc(3), C, clock())
    clock.advance(0.2)
    assert core.early_gossip_datagrams(clock()) == []  # too soon after the last round
    clock.advance(0.1)
    out = core.early_gossip_datagrams(clock())
    syncs = [decode_message(d) for d, _ in out]
    assert sorted(i for sync in syncs if isinstance(sync, Sync) for i in sync.node_ids) == [1, 2, 3]
    core.handle_datagram(disc(4), ("198.51.100.4", 4000), clock())
    clock.advance(0.3)  # that round took two datagrams: 0.5 s must pass
    assert core.early_gossip_datagrams(clock()) == []
    clock.advance(0.2)
    assert len(core.early_gossip_datagrams(clock())) == 2
    assert core.counters.early_syncs == 3
    core.handle_datagram(disc(5), ("198.51.100.5", 4000), clock())
    assert core.gossip_datagrams(clock())  # a timed round carries the news too
    clock.advance(10)
    assert core.early_gossip_datagrams(clock()) == []


def test_early_gossip_can_be_turned_off() -> None:
    core, clock = make(early_gossip_spacing=0.0)
    core.set_static_peers([PEER])
    core.handle_datagram(disc(1), A, clock())
    assert core.early_gossip_datagrams(clock()) == []


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        pytest.param(b"", DropReason.MALFORMED, id="empty"),
        pytest.param(b"PILP", DropReason.NOT_BEACON_MESSAGE, id="tunnel-frame"),
        pytest.param(b"\x00abcd", DropReason.UNKNOWN_TYPE, id="type-0"),
        pytest.param(b"\x0f", DropReason.UNKNOWN_TYPE, id="type-15"),
        pytest.param(b"\x01\x00\x00", DropReason.MALFORMED, id="short-discover"),
        pytest.param(b"\x05" + bytes(7), DropReason.MALFORMED, id="short-relay"),
        pytest.param(b"\x07\x00\x00\x00\x01\x00\x02\x00", DropReason.MALFORMED, id="short-sync"),
        pytest.param(
            encode_message(DiscoverReply(A)), DropReason.UNEXPECTED_TYPE, id="discover-reply"
        ),
        pytest.param(
            encode_message(PunchCommand(A)), DropReason.UNEXPECTED_TYPE, id="punch-command"
        ),
        pytest.param(
            encode_message(RelayDeliver(1, b"x")), DropReason.UNEXPECTED_TYPE, id="relay-deliver"
        ),
    ],
)
def test_bad_datagrams_dropped_by_reason(data: bytes, reason: DropReason) -> None:
    core, clock = make()
    assert core.handle_datagram(data, A, clock()) == []
    assert drops(core, reason) == 1
    assert core.snapshot().dropped_total == 1


def test_snapshot_is_a_copy() -> None:
    core, clock = make()
    core.set_static_peers([("2001:db8::1", 9001)])
    core.handle_datagram(disc(1), A, clock())
    core.note_send_failed()
    snap = core.snapshot()
    assert snap.beacon_id == 7
    assert snap.strict is True
    assert snap.nodes == 1
    assert snap.peers == ("[2001:db8::1]:9001",)
    assert snap.drops["send_failed"] == 1
    assert set(snap.drops) == {r.value for r in DropReason}
    core.handle_datagram(disc(2), B, clock())
    assert snap.nodes == 1
    with pytest.raises(TypeError):
        snap.drops["send_failed"] = 5  # type: ignore[index]


def test_sweep_forgets_idle_rate_limit_sources() -> None:
    core, clock = make(
        discover_limit=RateLimit(rate=1.0, burst=1.0),
        punch_limit=RateLimit(rate=1.0, burst=1.0),
        relay_packet_limit=RateLimit(rate=1.0, burst=5.0),
        relay_byte_limit=RateLimit(rate=1.0, burst=100.0),
        max_relay_payload=100,
    )
    core.handle_datagram(disc(1), A, clock())
    core.handle_datagram(encode_message(PunchRequest(1, 1)), A, clock())
    core.handle_datagram(encode_relay(1, 1, b"x"), A, clock())
    clock.advance(1000)
    core.sweep(clock())
    assert core.handle_datagram(disc(1), A, clock())


def test_config_validation() -> None:
    bad_configs: list[dict[str, Any]] = [
        {"beacon_id": 0},
        {"beacon_id": 2**32},
        {"beacon_id": 1, "node_ttl": 0},
        {"beacon_id": 1, "node_cap": 0},
        {"beacon_id": 1, "node_quota_host": -1},
        {"beacon_id": 1, "sync_ids_per_datagram": 16_001},
        {"beacon_id": 1, "relay_byte_limit": RateLimit(rate=1.0, burst=1000.0)},
    ]
    for bad in bad_configs:
        with pytest.raises(ValueError, match=r"must|range|least|positive"):
            BeaconConfig(**bad)
    assert RateLimit(1, 1).enabled
    assert not NO_LIMIT.enabled


def test_ipv6_sources_share_a_bucket_per_64() -> None:
    core, clock = make(discover_limit=RateLimit(rate=1.0, burst=1.0))
    assert core.handle_datagram(disc(1), ("2001:db8:0:1::1", 1), clock())
    assert core.handle_datagram(disc(2), ("2001:db8:0:1::ffff", 2), clock()) == []
    assert core.handle_datagram(disc(3), ("2001:db8:0:2::1", 3), clock())
    assert source_key("2001:db8:0:1:aaaa::1") == "2001:db8:0:1::/64"
    assert source_key("192.0.2.1") == "192.0.2.1"
