"""Property tests of the core: any datagrams from any sources never break it."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from natroute.beacon.auth import sign_discover
from natroute.beacon.config import BeaconConfig, RateLimit
from natroute.beacon.core import BeaconCore
from natroute.beacon.punch import (
    MSG_PUNCH_FORWARD,
    MSG_PUNCH_FORWARD_REPLY,
    decode_punch_forward,
)
from natroute.routing.wire import (
    Discover,
    DiscoverReply,
    PunchCommand,
    PunchRequest,
    Relay,
    RelayDeliver,
    Sync,
    decode_message,
    encode_message,
)

from .fakes import FakeClock

SOURCES = [("198.51.100.1", 1), ("198.51.100.1", 2), ("2001:db8::1", 3), ("192.0.2.100", 9001)]
PEER = SOURCES[3]
WALL = 1_800_000_000
KEY = Ed25519PrivateKey.generate()

node_ids = st.integers(0, 4)
messages = st.one_of(
    st.binary(max_size=48),
    st.builds(lambda n: encode_message(Discover(n)), node_ids),
    st.builds(
        lambda n, dt: encode_message(Discover(n, sign_discover(KEY, n, WALL + dt))),
        node_ids,
        st.integers(-200, 200),
    ),
    st.builds(lambda r, t: encode_message(PunchRequest(r, t)), node_ids, node_ids),
    st.builds(lambda s, d, p: encode_message(Relay(s, d, p)), node_ids, node_ids, st.binary()),
    st.builds(lambda ids: encode_message(Sync(9, tuple(ids))), st.lists(node_ids, max_size=5)),
    st.builds(lambda b: bytes([b[0] % 0x10]) + b[1:], st.binary(min_size=1, max_size=30)),
)
steps = st.lists(
    st.tuples(messages, st.integers(0, len(SOURCES) - 1), st.floats(0, 50)), max_size=40
)


@settings(max_examples=300, deadline=None)
@given(steps, st.booleans())
def test_core_never_raises_and_keeps_invariants(
    script: list[tuple[bytes, int, float]], strict: bool
) -> None:
    clock = FakeClock()
    config = BeaconConfig(
        beacon_id=7,
        strict=strict,
        node_cap=3,
        node_ttl=60.0,
        gossip_cap=3,
        discover_limit=RateLimit(5.0, 5.0),
        relay_packet_limit=RateLimit(5.0, 5.0),
    )
    core = BeaconCore(config, wall_clock=FakeClock(WALL))
    core.set_static_peers([PEER])
    for index, (data, source, step) in enumerate(script):
        out = core.handle_datagram(data, SOURCES[source], clock.advance(step))
        for datagram, dst in out:
            if datagram[0] in (MSG_PUNCH_FORWARD, MSG_PUNCH_FORWARD_REPLY):
                decode_punch_forward(datagram)  # only ever to a peer beacon
                assert dst == PEER
                continue
            sent = decode_message(datagram)
            assert type(sent) in (DiscoverReply, PunchCommand, RelayDeliver, Relay)
            assert dst in SOURCES
            if isinstance(sent, Relay):
                assert dst == PEER
                assert datagram == data
        assert len(core.nodes) <= 3
        assert len(core.gossip) <= 3
        if index % 5 == 4:
            core.sweep(clock())
    snap = core.snapshot()
    assert snap.received == len(script)
    assert core.gossip_datagrams(clock())
