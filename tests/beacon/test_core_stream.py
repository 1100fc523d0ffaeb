"""The core's side of stream sessions, with a fake clock (beacon README "Stream relay")."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from natroute.beacon.auth import sign_discover
from natroute.beacon.config import BeaconConfig, RateLimit
from natroute.beacon.core import (
    STREAM_HOST,
    Attach,
    AttachResult,
    BeaconCore,
    StreamOutput,
    is_stream,
)
from natroute.beacon.stats import DropReason
from natroute.routing.types import Addr
from natroute.routing.wire import (
    Discover,
    PunchRequest,
    Sync,
    encode_message,
    encode_relay,
)

from .fakes import FakeClock

WALL = 1_800_000_000.0
UDP: Addr = ("198.51.100.1", 4000)
PEER: Addr = ("192.0.2.100", 9001)
S1: Addr = (STREAM_HOST, 1)
S2: Addr = (STREAM_HOST, 2)


def make(**kw: object) -> tuple[BeaconCore, FakeClock]:
    config = BeaconConfig(beacon_id=7, **kw)  # type: ignore[arg-type]
    return BeaconCore(config, wall_clock=FakeClock(WALL)), FakeClock()


def raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


KEY = Ed25519PrivateKey.generate()
OTHER = Ed25519PrivateKey.generate()


def test_session_addresses_never_look_like_udp_sources() -> None:
    assert is_stream(S1)
    assert not is_stream(UDP)
    assert not is_stream(("::1", 1))


def test_attach_relay_both_ways_and_detach() -> None:
    core, clock = make()
    assert core.stream_attach(S1, 11, raw(KEY), "203.0.113.9", clock(), authoritative=True) == (
        Attach(AttachResult.ATTACHED)
    )
    entry = core.nodes.get(11, clock())
    assert entry is not None
    assert (entry.addr, entry.ip, entry.pubkey) == (S1, "203.0.113.9", raw(KEY))
    core.handle_datagram(encode_message(Discover(22)), UDP, clock())
    # UDP node -> stream node: the delivery is addressed to the session.
    out = core.handle_datagram(encode_relay(22, 11, b"to-stream"), UDP, clock())
    assert out == [(b"\x06" + (22).to_bytes(4, "big") + b"to-stream", S1)]
    # Stream node -> UDP node.
    result = core.handle_stream_message(S1, 11, encode_relay(11, 22, b"to-udp"), clock())
    assert result == StreamOutput([(b"\x06" + (11).to_bytes(4, "big") + b"to-udp", UDP)], True)
    assert core.counters.relayed_packets == 2
    core.stream_detach(S1, 11)
    assert core.nodes.get(11, clock()) is None
    core.stream_detach(S1, 11)  # idempotent


def test_stream_messages_are_checked_and_counted() -> None:
    core, clock = make()
    core.stream_attach(S1, 11, raw(KEY), "203.0.113.9", clock(), authoritative=True)
    # Another sender ID from this session.
    assert core.handle_stream_message(S1, 11, encode_relay(12, 22, b"x"), clock()).out == []
    assert core.counters.drops[DropReason.RELAY_SENDER_MISMATCH] == 1
    # Unknown destination.
    assert core.handle_stream_message(S1, 11, encode_relay(11, 99, b"x"), clock()).out == []
    assert core.counters.drops[DropReason.RELAY_UNKNOWN_DST] == 1
    # Punch requests and syncs have no business on a stream; junk is malformed.
    for data in (encode_message(PunchRequest(11, 22)), encode_message(Sync(3, (1,)))):
        assert core.handle_stream_message(S1, 11, data, clock()) == StreamOutput([], True)
    assert core.counters.drops[DropReason.UNEXPECTED_TYPE] == 2
    for data in (b"", b"PILS", b"\x05\x00"):
        core.handle_stream_message(S1, 11, data, clock())
    assert core.counters.drops[DropReason.MALFORMED] == 3


def test_keepalive_refreshes_the_entry() -> None:
    core, clock = make(node_ttl=10.0)
    core.stream_attach(S1, 11, raw(KEY), "203.0.113.9", clock(), authoritative=True)
    clock.advance(9)
    core.handle_stream_message(S1, 11, encode_message(Discover(11)), clock())
    clock.advance(9)
    assert core.nodes.get(11, clock()) is not None
    core.handle_stream_message(S1, 11, encode_message(Discover(12)), clock())  # not ours: ignored
    clock.advance(2)
    assert core.nodes.get(11, clock()) is None
    assert core.handle_stream_message(S1, 11, b"\x01\x00\x00\x00\x0b", clock()).attached is False


def test_session_budget_is_the_relay_budget() -> None:
    core, clock = make(relay_packet_limit=RateLimit(1.0, 2.0))
    core.stream_attach(S1, 11, raw(KEY), "203.0.113.9", clock(), authoritative=True)
    core.handle_datagram(encode_message(Discover(22)), UDP, clock())
    frames = [
        core.handle_stream_message(S1, 11, encode_relay(11, 22, b"x"), clock()) for _ in range(3)
    ]
    assert [bool(f.out) for f in frames] == [True, True, False]
    assert core.counters.drops[DropReason.RATE_LIMITED_RELAY] == 1


def test_takeover_rules() -> None:
    core, clock = make()
    # A UDP entry signed by KEY: the same key moves it to a session without the registry.
    signed = encode_message(Discover(11, sign_discover(KEY, 11, int(WALL))))
    core.handle_datagram(signed, UDP, clock())
    assert core.stream_attach(S1, 11, raw(KEY), "203.0.113.9", clock(), authoritative=False) == (
        Attach(AttachResult.ATTACHED)
    )
    # Another key only with the registry's word; the replaced session is named.
    assert core.stream_attach(S2, 11, raw(OTHER), "203.0.113.9", clock(), authoritative=False) == (
        Attach(AttachResult.TAKEOVER_REJECTED)
    )
    assert core.counters.drops[DropReason.TAKEOVER_REJECTED] == 1
    assert core.stream_attach(S2, 11, raw(OTHER), "203.0.113.9", clock(), authoritative=True) == (
        Attach(AttachResult.ATTACHED, replaced=S1)
    )
    assert (
        core.handle_stream_message(S1, 11, encode_message(Discover(11)), clock()).attached is False
    )
    entry = core.nodes.get(11, clock())
    assert entry is not None
    assert (entry.addr, entry.pubkey, entry.auth_time) == (S2, raw(OTHER), -1)
    # Re-attaching the same session is a refresh, not a registration.
    registrations = core.counters.registrations
    core.stream_attach(S2, 11, raw(OTHER), "203.0.113.9", clock(), authoritative=True)
    assert core.counters.registrations == registrations


def test_unsigned_entry_yields_to_the_registry_only() -> None:
    core, clock = make()
    core.handle_datagram(encode_message(Discover(11)), UDP, clock())
    result = core.stream_attach(S1, 11, raw(KEY), "203.0.113.9", clock(), authoritative=False)
    assert result.result is AttachResult.TAKEOVER_REJECTED
    result = core.stream_attach(S1, 11, raw(KEY), "203.0.113.9", clock(), authoritative=True)
    assert result == Attach(AttachResult.ATTACHED)


def test_node_moves_back_to_udp_only_under_its_key() -> None:
    core, clock = make()
    core.stream_attach(S1, 11, raw(KEY), "203.0.113.9", clock(), authoritative=True)
    core.handle_datagram(encode_message(Discover(11)), UDP, clock())  # unsigned: no
    core.handle_datagram(
        encode_message(Discover(11, sign_discover(OTHER, 11, int(WALL)))), UDP, clock()
    )  # another key: no
    entry = core.nodes.get(11, clock())
    assert entry is not None
    assert entry.addr == S1
    assert core.counters.drops[DropReason.TAKEOVER_REJECTED] == 2
    core.handle_datagram(
        encode_message(Discover(11, sign_discover(KEY, 11, int(WALL)))), UDP, clock()
    )
    assert entry.addr == UDP
    assert (
        core.handle_stream_message(S1, 11, encode_message(Discover(11)), clock()).attached is False
    )
    core.stream_detach(S1, 11)  # the session closing later does not remove the UDP entry
    assert core.nodes.get(11, clock()) is entry


def test_quota_and_cap_apply_to_sessions() -> None:
    core, clock = make(node_quota_host=1)
    assert core.stream_attach(
        S1, 11, raw(KEY), "203.0.113.9", clock(), authoritative=True
    ).result is (AttachResult.ATTACHED)
    refused = core.stream_attach(S2, 12, raw(OTHER), "203.0.113.9", clock(), authoritative=True)
    assert refused.result is AttachResult.TABLE_FULL
    assert core.counters.drops[DropReason.QUOTA] == 1
    # Moving an entry into a full prefix is refused too.
    core.handle_datagram(
        encode_message(Discover(13, sign_discover(OTHER, 13, int(WALL)))), UDP, clock()
    )
    moved = core.stream_attach(S2, 13, raw(OTHER), "203.0.113.9", clock(), authoritative=True)
    assert moved.result is AttachResult.TABLE_FULL


def test_punch_to_a_stream_node_is_dropped() -> None:
    core, clock = make()
    core.stream_attach(S1, 11, raw(KEY), "203.0.113.9", clock(), authoritative=True)
    assert core.handle_datagram(encode_message(PunchRequest(22, 11)), UDP, clock()) == []
    assert core.counters.drops[DropReason.PUNCH_TARGET_STREAM] == 1


def test_gossip_announces_stream_nodes_and_peers_deliver_to_them() -> None:
    core, clock = make()
    core.set_static_peers([PEER])
    core.stream_attach(S1, 11, raw(KEY), "203.0.113.9", clock(), authoritative=True)
    sync = core.gossip_datagrams(clock())
    assert sync == [(encode_message(Sync(7, (11,))), PEER)]
    # A relay forwarded by the peer beacon (05 unchanged) is delivered over the stream.
    out = core.handle_datagram(encode_relay(55, 11, b"via-peer"), PEER, clock())
    assert out == [(b"\x06" + (55).to_bytes(4, "big") + b"via-peer", S1)]
    # And a stream node reaches a node the peer announced: forwarded unchanged.
    core.handle_datagram(encode_message(Sync(9, (55,))), PEER, clock())
    frame = encode_relay(11, 55, b"to-peer")
    assert core.handle_stream_message(S1, 11, frame, clock()).out == [(frame, PEER)]
