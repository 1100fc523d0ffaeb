"""The sidecar's peer logic (spec §7, issue 5 "Data plane and peer frames") on a fake network.

Every test runs real Nodes and Managers and a real BeaconCore on one fake
clock (:mod:`.fakenet`); nothing sleeps and nothing touches a socket.
"""

from __future__ import annotations

import errno

import pytest

from natroute.routing.config import ManagerConfig
from natroute.routing.wire import (
    MSG_PUNCH_REQUEST,
    MSG_RELAY,
    DiscoverReply,
    PunchCommand,
    RelayDeliver,
    Sync,
    encode_message,
)
from natroute.sidecar.crypto import FRAME_MAGIC, PeerCipher
from natroute.sidecar.frames import InnerType, encode_probe
from natroute.sidecar.node import DropReason, NatType, NodeConfig, PeerInfo
from natroute.sidecar.peers import Path, PathReason, Peer

from .fakenet import BEACON_ADDR, FakeNet, FakeNode, NatKind

ROGUE = ("198.51.100.250", 6666)


def peer(n: FakeNode, other: FakeNode) -> Peer:
    p = n.node.peers.get(other.node_id)
    assert p is not None, f"{n.node_id:#x} does not know {other.node_id:#x}"
    return p


def history(n: FakeNode, other: FakeNode) -> list[tuple[Path, PathReason]]:
    return [(e.path, e.reason) for e in peer(n, other).events]


def cipher(sender: FakeNode, receiver: FakeNode, epoch: int | None = None) -> PeerCipher:
    """A sealing cipher of ``sender`` towards ``receiver`` (a fresh counter)."""
    return PeerCipher(
        sender.node_id,
        sender.key,
        receiver.node_id,
        receiver.public_key,
        sender.epoch if epoch is None else epoch,
    )


def data(payload: bytes) -> bytes:
    return bytes([InnerType.DATA]) + payload


def relayed_to(net: FakeNet, n: FakeNode) -> int:
    """Relay messages ``n`` has sent to the beacon."""
    return sum(1 for d, a in n.sock.sent if a == BEACON_ADDR and d[0] == MSG_RELAY)


def direct_frames(n: FakeNode, addr: object) -> int:
    """Encrypted frames ``n`` sent straight to ``addr``."""
    return sum(1 for d, a in n.sock.sent if a == addr and d[:4] == FRAME_MAGIC)


def connected(net: FakeNet, a: FakeNode, b: FakeNode) -> None:
    """First contact both ways, then a payload each way, direct."""
    a.node.send_app(b.node_id, b"hello")
    net.run()
    b.node.send_app(a.node_id, b"hi")
    a.node.send_app(b.node_id, b"again")
    net.run()
    assert peer(a, b).direct_recv > 0
    assert peer(b, a).direct_recv > 0


# -- first contact ----------------------------------------------------------


def test_first_contact_resolves_then_punches_probes_and_delivers() -> None:
    net = FakeNet()
    a, b = net.add_node(), net.add_node()
    a.io.auto_resolve = False
    before = len(a.sock.sent)
    a.node.send_app(b.node_id, b"x")
    assert a.io.resolves == [b.node_id]
    assert len(a.sock.sent) == before  # nothing leaves before the registry answers
    a.io.answer_all()
    sent = a.sock.sent[before:]
    assert sent[0] == (
        bytes([MSG_PUNCH_REQUEST]) + a.node_id.to_bytes(4, "big") + b.node_id.to_bytes(4, "big"),
        BEACON_ADDR,
    )
    assert sent[1] == (b"PILP", b.endpoint)
    probes = sent[2:5]
    assert all(d[:4] == FRAME_MAGIC and addr == b.endpoint for d, addr in probes)
    assert peer(a, b).probes_sent == 3
    assert len(sent) == 5  # the payload waits until b answers the dial
    assert history(a, b) == [(Path.DIRECT, PathReason.PUNCHED)]
    net.run()
    assert b.io.delivered == [(a.node_id, b"x")]
    assert peer(a, b).acks_recv == peer(a, b).probes_sent >= 3  # every probe answered
    assert b.node.punches_received >= 1


def test_pending_outbound_is_flushed_after_resolve_and_capped() -> None:
    net = FakeNet(node_config=NodeConfig(pending_per_peer=4, max_pending_senders=2))
    a, b = net.add_node(), net.add_node()
    a.io.auto_resolve = False
    for i in range(6):
        a.node.send_app(b.node_id, b"p%d" % i)
    assert a.node.drops[DropReason.PENDING_FULL] == 2
    assert a.io.resolves == [b.node_id]  # one resolve, not one per payload
    a.node.send_app(0xDEAD, b"q")
    a.node.send_app(0xBEEF, b"r")  # a third unknown destination: over the cap
    assert a.node.drops[DropReason.PENDING_FULL] == 3
    a.io.answer_all()
    net.run()
    assert b.io.delivered == [(a.node_id, b"p%d" % i) for i in range(2, 6)]
    assert a.node.drops[DropReason.UNRESOLVED] == 1  # 0xDEAD is not registered


def test_resolve_is_retried_only_after_the_retry_interval() -> None:
    net = FakeNet()
    a = net.add_node()
    a.io.auto_resolve = False
    a.node.send_app(0xDEAD, b"1")
    a.node.send_app(0xDEAD, b"2")
    assert a.io.resolves == [0xDEAD]
    net.clock.advance(3.0)
    a.node.send_app(0xDEAD, b"3")
    assert a.io.resolves == [0xDEAD, 0xDEAD]


def test_failed_resolves_do_not_block_new_peers_forever() -> None:
    net = FakeNet(node_config=NodeConfig(max_pending_senders=2))
    a, b = net.add_node(), net.add_node()
    for unknown in (0xD1, 0xD2):
        a.node.send_app(unknown, b"x")
    assert a.node.drops[DropReason.UNRESOLVED] == 2
    a.node.send_app(b.node_id, b"early")  # both lookups are recent: no room yet
    assert a.io.resolves == [0xD1, 0xD2]
    net.clock.advance(3.0)  # the failed lookups are stale now
    a.node.send_app(b.node_id, b"x")
    net.run()
    assert b.io.delivered == [(a.node_id, b"early"), (a.node_id, b"x")]


def test_unknown_inbound_sender_is_held_resolved_then_processed() -> None:
    net = FakeNet(node_config=NodeConfig(pending_inbound_per_sender=2, max_pending_senders=1))
    a, b, c = net.add_node(), net.add_node(), net.add_node()
    a.io.auto_resolve = False
    seal = cipher(b, a)
    for i in range(3):
        net.inject(seal.seal(data(b"m%d" % i)), b.endpoint or ROGUE, a.inside)
    net.inject(cipher(c, a).seal(data(b"c")), c.inside, a.inside)  # a second unknown sender
    net.run()
    assert a.node.drops[DropReason.PENDING_FULL] == 1
    assert a.node.drops[DropReason.UNKNOWN_SENDER] == 1
    assert a.io.resolves == [b.node_id]
    assert a.io.delivered == []
    a.io.answer_all()
    assert a.io.delivered == [(b.node_id, b"m0"), (b.node_id, b"m1")]
    assert peer(a, b).direct_recv == 2
    assert a.manager.has_direct_recv(b.node_id)


def test_frames_held_after_a_failed_resolve_do_not_hold_the_sender_cap() -> None:
    net = FakeNet(node_config=NodeConfig(max_pending_senders=1))
    a, b, c = net.add_node(), net.add_node(), net.add_node()
    a.io.auto_resolve = False
    net.registry.pop(b.node_id)  # b is not (yet) in the registry
    forged = cipher(b, a)
    a.node.datagram_received(forged.seal(data(b"1")), ROGUE)
    a.io.answer_all()  # the lookup fails quickly ...
    a.node.datagram_received(forged.seal(data(b"2")), ROGUE)  # ... this one waits, no lookup
    assert a.io.resolves == [b.node_id]
    net.advance(3.0)  # the upkeep asks again for senders whose frames still wait
    assert a.io.resolves == [b.node_id, b.node_id]
    a.io.answer_all()
    assert a.node.drops[DropReason.UNRESOLVED] == 2
    a.node.datagram_received(cipher(c, a).seal(data(b"from c")), c.inside)
    assert a.node.drops[DropReason.UNKNOWN_SENDER] == 0
    net.advance(3.0)  # (b's lookup still fills the one lookup slot until then)
    a.io.answer_all()
    assert a.io.delivered == [(c.node_id, b"from c")]


def test_self_id_and_unknown_ids_drop_what_waited() -> None:
    net = FakeNet()
    a, b = net.add_node(), net.add_node()
    a.node.send_app(a.node_id, b"me")  # the registry answers with ourselves
    assert a.node.drops[DropReason.UNRESOLVED] == 1
    assert a.node.peers.get(a.node_id) is None
    own = PeerCipher(a.node_id, b.key, a.node_id, a.public_key, 1)
    a.node.datagram_received(own.seal(data(b"spoof")), ROGUE)
    assert a.node.drops[DropReason.UNKNOWN_SENDER] == 1
    a.io.auto_resolve = False
    stranger = cipher(b, a)
    for _ in range(2):
        a.node.datagram_received(stranger.seal(data(b"?")), ROGUE)
    net.registry.pop(b.node_id)
    a.io.answer_all()
    assert a.node.drops[DropReason.UNRESOLVED] == 3
    assert a.node.peers.get(b.node_id) is None
    assert a.io.delivered == []


@pytest.mark.parametrize("key", [b"\x00" * 32, b"short"])
def test_unusable_registry_key_fails_the_resolve(key: bytes) -> None:
    net = FakeNet()
    a, b = net.add_node(), net.add_node()
    net.registry[b.node_id] = PeerInfo(b.node_id, b.endpoint, False, key)
    a.node.send_app(b.node_id, b"x")
    assert a.node.drops[DropReason.UNRESOLVED] == 1
    assert a.node.peers.get(b.node_id) is None


def test_peer_table_full_drops_the_new_peer() -> None:
    net = FakeNet(node_config=NodeConfig(max_peers=1))
    a, b, c = net.add_node(), net.add_node(), net.add_node()
    a.node.send_app(b.node_id, b"x")
    a.node.send_app(c.node_id, b"y")
    assert a.node.drops[DropReason.PEER_TABLE_FULL] == 1
    assert a.node.drops[DropReason.UNRESOLVED] == 1
    assert a.node.peers.get(c.node_id) is None


def test_no_endpoint_and_no_relay_is_counted_as_no_address() -> None:
    net = FakeNet()
    a, b = net.add_node(), net.add_node()
    net.registry[b.node_id] = PeerInfo(b.node_id, None, False, b.public_key)
    a.manager.set_beacon_addr_udp(None)
    a.node.send_app(b.node_id, b"x")
    assert a.node.drops[DropReason.NO_ADDRESS] == 1


# -- paths by NAT type -------------------------------------------------------


def test_cone_to_cone_goes_direct_after_the_punch() -> None:
    net = FakeNet()
    a, b = net.add_node(NatKind.CONE), net.add_node(NatKind.CONE)
    connected(net, a, b)
    relayed = relayed_to(net, a) + relayed_to(net, b)
    a.io.delivered.clear()
    b.io.delivered.clear()
    for i in range(5):
        a.node.send_app(b.node_id, b"a%d" % i)
        b.node.send_app(a.node_id, b"b%d" % i)
    net.run()
    assert b.io.delivered == [(a.node_id, b"a%d" % i) for i in range(5)]
    assert a.io.delivered == [(b.node_id, b"b%d" % i) for i in range(5)]
    assert relayed_to(net, a) + relayed_to(net, b) == relayed
    for x, y in ((a, b), (b, a)):
        assert not x.manager.is_relay_peer(y.node_id)
        assert peer(x, y).path is Path.DIRECT
        assert peer(x, y).addr == y.endpoint


@pytest.mark.parametrize(
    ("a_nat", "a_relay_only", "b_nat", "b_relay_only", "a_sees", "b_sees"),
    [
        (
            NatType.ENDPOINT_DEPENDENT,
            True,
            None,
            False,
            PathReason.LOCAL_SYMMETRIC_NAT,
            PathReason.RELAY_ONLY,
        ),
        (None, True, None, False, PathReason.SELF_RELAY_ONLY, PathReason.RELAY_ONLY),
        (
            NatType.ENDPOINT_DEPENDENT,
            False,
            None,
            False,
            PathReason.LOCAL_SYMMETRIC_NAT,
            PathReason.PEER_RELAYED,
        ),
        (
            NatType.ENDPOINT_DEPENDENT,
            True,
            NatType.ENDPOINT_DEPENDENT,
            True,
            PathReason.RELAY_ONLY,
            PathReason.RELAY_ONLY,
        ),
    ],
    ids=["sym-relay-only-to-cone", "self-relay-only", "sym-not-published", "sym-to-sym"],
)
def test_symmetric_nat_is_relayed_from_the_first_datagram(
    a_nat: NatType | None,
    a_relay_only: bool,
    b_nat: NatType | None,
    b_relay_only: bool,
    a_sees: PathReason,
    b_sees: PathReason,
) -> None:
    net = FakeNet()
    a = net.add_node(NatKind.SYMMETRIC, relay_only=a_relay_only, nat_type=a_nat)
    b_kind = NatKind.SYMMETRIC if b_nat is NatType.ENDPOINT_DEPENDENT else NatKind.CONE
    b = net.add_node(b_kind, relay_only=b_relay_only, nat_type=b_nat)
    a.node.send_app(b.node_id, b"first")
    assert direct_frames(a, b.endpoint) == 0  # no direct attempt at all
    assert relayed_to(net, a) == 1
    net.run()
    assert b.io.delivered == [(a.node_id, b"first")]
    b.node.send_app(a.node_id, b"back")
    net.run()
    assert a.io.delivered == [(b.node_id, b"back")]
    assert peer(a, b).path is Path.RELAY
    assert peer(a, b).reason is a_sees
    assert peer(b, a).path is Path.RELAY
    assert peer(b, a).reason is b_sees
    assert a.manager.is_relay_pinned(b.node_id)
    assert b.manager.is_relay_peer(a.node_id)


def test_nat_type_learnt_later_pins_existing_peers() -> None:
    net = FakeNet()
    a, b = net.add_node(), net.add_node()
    connected(net, a, b)
    a.node.set_nat_type(NatType.ENDPOINT_DEPENDENT)
    assert a.node.nat_type is NatType.ENDPOINT_DEPENDENT
    assert history(a, b)[-1] == (Path.RELAY, PathReason.LOCAL_SYMMETRIC_NAT)
    a.node.set_nat_type(NatType.ENDPOINT_DEPENDENT)  # unchanged: no second event
    assert len(history(a, b)) == 2
    assert a.manager.is_relay_pinned(b.node_id)


# -- blackhole, dial failure and the way back ----------------------------------


def send_every_step(net: FakeNet, a: FakeNode, b: FakeNode) -> None:
    a.node.send_app(b.node_id, b"t=%d" % net.clock.now)


def test_blackhole_flips_to_relay_then_heals_back_to_direct() -> None:
    net = FakeNet(node_config=NodeConfig(probe_initial_interval=5.0, probe_max_interval=40.0))
    a, b = net.add_node(NatKind.CONE), net.add_node(NatKind.CONE)
    connected(net, a, b)
    net.blackhole(a, b)
    b.io.delivered.clear()
    flip_at = None
    for _ in range(20):
        net.advance(1.0, each=lambda: send_every_step(net, a, b))
        if a.manager.is_relay_peer(b.node_id):
            flip_at = net.clock.now
            break
    # silent for more than 8 s, then three misses: the third write flips and pins
    assert flip_at is not None
    assert flip_at - (a.manager.last_direct_recv(b.node_id) or 0) == pytest.approx(11.0)
    assert history(a, b)[-1] == (Path.RELAY, PathReason.BLACKHOLE)
    assert a.manager.is_relay_pinned(b.node_id)
    before = len(b.io.delivered)
    net.advance(3.0, each=lambda: send_every_step(net, a, b))
    assert len(b.io.delivered) == before + 3  # delivery continues through the beacon
    # re-probes with backoff while the direct path stays dead
    schedule = [peer(a, b).next_probe_at]
    backoffs = [peer(a, b).probe_backoff]
    punches = sum(1 for d, _ in a.sock.sent if d[0] == MSG_PUNCH_REQUEST)
    for _ in range(120):
        net.advance(1.0)
        if peer(a, b).next_probe_at != schedule[-1]:
            schedule.append(peer(a, b).next_probe_at)
            backoffs.append(peer(a, b).probe_backoff)
    assert backoffs[:4] == [5.0, 10.0, 20.0, 40.0]  # doubling ...
    assert backoffs[4:] == [40.0] * (len(backoffs) - 4)  # ... up to the max
    assert len(backoffs) >= 5
    probes = len(backoffs) - 1  # one punch request (and probes) per scheduled re-probe
    assert sum(1 for d, _ in a.sock.sent if d[0] == MSG_PUNCH_REQUEST) == punches + probes
    assert a.manager.is_relay_pinned(b.node_id)
    # heal: the next probe gets authenticated direct answers
    net.blackhole(a, b, on=False)
    net.clock.advance((peer(a, b).next_probe_at or 0) - net.clock.now)
    for x in (a, b):
        x.node.tick()
    seen: list[tuple[bool, bool]] = []
    while net.queued:
        d = net.step()
        if not d.dropped and d.dst == a.endpoint and d.data[:4] == FRAME_MAGIC:
            r = a.manager.peer_routing(b.node_id)
            seen.append((r.relay, r.pinned))
    # an answer to our probe unpins (the flag stays), then the direct clears clear it
    assert seen.index((True, False)) < seen.index((False, False))
    assert history(a, b)[-1] == (Path.DIRECT, PathReason.DIRECT_RESTORED)
    assert peer(a, b).next_probe_at is None
    relayed = relayed_to(net, a)
    a.node.send_app(b.node_id, b"direct again")
    net.run()
    assert relayed_to(net, a) == relayed
    assert b.io.delivered[-1] == (a.node_id, b"direct again")


def test_one_way_blackhole_moves_both_sides_to_the_relay_and_keeps_them_there() -> None:
    net = FakeNet()
    a, b = net.add_node(), net.add_node()
    connected(net, a, b)
    net.blackhole(a, b, one_way=True)  # a's frames never reach b; b's reach a
    net.advance(30.0, each=lambda: send_every_step(net, a, b))
    assert history(a, b)[-1] == (Path.RELAY, PathReason.BLACKHOLE)
    assert history(b, a)[-1] == (Path.RELAY, PathReason.PEER_RELAYED)
    # b's re-probes reach a, but they are no answer to a's probes: a stays relayed
    events = len(peer(a, b).events)
    b.io.delivered.clear()
    net.advance(120.0, each=lambda: send_every_step(net, a, b))
    assert peer(b, a).probes_sent > 3
    assert len(peer(a, b).events) == events
    assert a.manager.is_relay_pinned(b.node_id)
    assert len(b.io.delivered) == 120  # nothing lost to a false restore
    net.blackhole(a, b, on=False, one_way=True)
    net.advance(130.0)
    assert history(a, b)[-1] == (Path.DIRECT, PathReason.DIRECT_RESTORED)
    assert not a.manager.is_relay_peer(b.node_id)


@pytest.mark.parametrize("seed", [0, 1])
def test_a_lossy_link_never_leaves_the_pair_stuck_on_the_relay(seed: int) -> None:
    net = FakeNet(seed=seed)
    a, b = net.add_node(NatKind.CONE), net.add_node(NatKind.CONE)
    connected(net, a, b)
    net.loss = 0.3
    b.io.delivered.clear()
    net.advance(120.0, each=lambda: send_every_step(net, a, b))
    assert len(b.io.delivered) > 120 * 0.6  # lost frames are not retransmitted
    net.loss = 0.0
    net.advance(130.0, each=lambda: send_every_step(net, a, b))  # probe backoff <= 120 s
    assert not a.manager.is_relay_peer(b.node_id)
    assert not b.manager.is_relay_peer(a.node_id)
    assert (peer(a, b).path, peer(b, a).path) == (Path.DIRECT, Path.DIRECT)
    b.io.delivered.clear()
    net.advance(20.0, each=lambda: send_every_step(net, a, b))
    assert len(b.io.delivered) == 20


def test_first_payloads_behind_cone_nats_wait_for_the_punch_and_arrive() -> None:
    """Data is held while the dial runs: none is lost to the peer's closed NAT."""
    net = FakeNet()
    a, b = net.add_node(NatKind.CONE), net.add_node(NatKind.CONE)
    for i in range(3):
        a.node.send_app(b.node_id, b"early-%d" % i)
    assert len(peer(a, b).held) == 3
    net.run()
    assert b.io.delivered == [(a.node_id, b"early-%d" % i) for i in range(3)]
    assert not peer(a, b).held
    assert peer(a, b).dial_deadline is None
    assert history(a, b) == [(Path.DIRECT, PathReason.PUNCHED)]
    assert relayed_to(net, a) == 0  # everything went direct


def test_dial_keeps_probing_and_caps_what_it_holds() -> None:
    net = FakeNet(node_config=NodeConfig(pending_per_peer=2, dial_probe_interval=0.5))
    a, b = net.add_node(NatKind.CONE), net.add_node(NatKind.CONE)
    net.blackhole(a, b)
    a.node.send_app(b.node_id, b"1")
    net.run()
    probes = peer(a, b).probes_sent
    net.tick()  # no time has passed: the next dial probe is not due yet
    assert peer(a, b).probes_sent == probes
    for payload in (b"2", b"3"):
        a.node.send_app(b.node_id, payload)
    assert list(peer(a, b).held) == [b"2", b"3"]  # the oldest gave way
    assert a.node.drops[DropReason.PENDING_FULL] == 1
    net.advance(1.0, step=0.5)
    assert peer(a, b).probes_sent > probes  # re-probed while dialing
    net.blackhole(a, b, on=False)
    net.advance(0.5, step=0.5)
    assert [p for _, p in b.io.delivered] == [b"2", b"3"]
    assert history(a, b) == [(Path.DIRECT, PathReason.PUNCHED)]


def test_dial_failure_relays_unpinned_then_restores() -> None:
    net = FakeNet()
    a, b = net.add_node(NatKind.CONE), net.add_node(NatKind.CONE)
    net.blackhole(a, b)
    a.node.send_app(b.node_id, b"held")
    net.run()
    assert peer(a, b).dial_deadline == pytest.approx(net.clock.now + 5.0)
    net.advance(5.0)
    assert history(a, b) == [
        (Path.DIRECT, PathReason.PUNCHED),
        (Path.RELAY, PathReason.DIAL_FAILURE),
    ]
    assert b.io.delivered == [(a.node_id, b"held")]  # sent through the beacon, not lost
    assert a.manager.is_relay_peer(b.node_id)
    assert not a.manager.is_relay_pinned(b.node_id)
    a.node.send_app(b.node_id, b"via relay")
    net.run()
    assert b.io.delivered[-1] == (a.node_id, b"via relay")
    net.blackhole(a, b, on=False)
    net.advance(5.0)
    assert history(a, b)[-1] == (Path.DIRECT, PathReason.DIRECT_RESTORED)
    assert not a.manager.is_relay_peer(b.node_id)


def test_manager_flip_outside_a_write_is_recorded_on_the_next_tick() -> None:
    net = FakeNet()
    a, b = net.add_node(), net.add_node()
    connected(net, a, b)
    a.manager.set_relay_peer_pinned(b.node_id, True)
    net.tick()
    assert history(a, b)[-1] == (Path.RELAY, PathReason.BLACKHOLE)
    assert peer(a, b).next_probe_at == pytest.approx(net.clock.now + 5.0)


# -- only authenticated frames are evidence --------------------------------------


def test_forged_replayed_and_old_epoch_frames_change_nothing() -> None:
    net = FakeNet()
    a = net.add_node()
    b = net.add_node(epoch=5)
    connected(net, a, b)
    captured = next(
        d.data for d in net.delivered if d.dst == a.inside and d.data[:4] == FRAME_MAGIC
    )
    state = a.manager.peer_routing(b.node_id)
    recv = peer(a, b).pkts_recv
    header = FRAME_MAGIC + b.node_id.to_bytes(4, "big")
    forged = [
        header + (5).to_bytes(8, "big") + (99).to_bytes(8, "big") + b"\x01" * 20,
        header + (6).to_bytes(8, "big") + (0).to_bytes(8, "big") + b"\x01" * 20,  # newer epoch
        captured,  # a replay
        cipher(b, a, epoch=4).seal(data(b"old epoch")),
    ]
    for frame in forged:
        a.node.datagram_received(frame, b.inside)
        a.node.datagram_received(encode_message(RelayDeliver(b.node_id, frame)), BEACON_ADDR)
    assert a.node.drops[DropReason.AUTH_FAILED] == 2 * len(forged)
    assert a.manager.peer_routing(b.node_id) == state
    assert peer(a, b).pkts_recv == recv
    assert len(a.io.delivered) == 1
    b.node.send_app(a.node_id, b"still fine")  # the forged newer epoch did not move a's
    net.run()
    assert a.io.delivered[-1] == (b.node_id, b"still fine")


def test_beacon_messages_from_elsewhere_are_ignored() -> None:
    net = FakeNet()
    a, b, c = net.add_node(), net.add_node(), net.add_node()
    connected(net, a, b)
    a.node.send_app(c.node_id, b"hi")
    net.run()
    state = a.manager.peer_routing(b.node_id)
    sent = len(a.sock.sent)
    genuine = cipher(b, a, epoch=9).seal(data(b"relayed?"))
    a.node.datagram_received(encode_message(RelayDeliver(b.node_id, genuine)), ROGUE)
    a.node.datagram_received(encode_message(PunchCommand(ROGUE)), ROGUE)
    a.node.datagram_received(encode_message(RelayDeliver(b.node_id, genuine)), b.inside)
    assert a.node.drops[DropReason.NOT_FROM_BEACON] == 3
    assert len(a.sock.sent) == sent  # no punch packets towards the rogue
    assert a.manager.peer_routing(b.node_id) == state
    # from the beacon, but the claimed source is not the frame's sender
    a.node.datagram_received(encode_message(RelayDeliver(c.node_id, genuine)), BEACON_ADDR)
    assert a.node.drops[DropReason.RELAY_SRC_MISMATCH] == 1
    assert a.manager.peer_routing(b.node_id) == state
    assert a.manager.peer_routing(c.node_id).relay is False
    assert a.io.delivered[-1][1] != b"relayed?"


def test_relay_cap_refuses_a_new_relay_peer() -> None:
    net = FakeNet()
    a = net.add_node(manager_config=ManagerConfig(max_relay_peers=1))
    b, c = net.add_node(), net.add_node()
    connected(net, a, b)
    connected(net, a, c)
    a.node.set_relay(b.node_id, True, True)  # the one relay slot
    c.node.set_relay(a.node_id, True, True)
    net.clock.advance(9.0)  # a's last direct receipt from c is older than the threshold
    delivered = len(a.io.delivered)
    c.node.send_app(a.node_id, b"via relay")
    net.run()
    assert a.node.drops[DropReason.RELAY_CAP] == 1
    assert len(a.io.delivered) == delivered
    assert not a.manager.is_relay_peer(c.node_id)


# -- ICMP attribution --------------------------------------------------------------


def test_icmp_errors_are_charged_to_the_peer_at_that_address_only() -> None:
    net = FakeNet()
    a, b, c = net.add_node(), net.add_node(), net.add_node()
    connected(net, a, b)
    connected(net, a, c)
    refused = net.icmp_refused
    a.node.on_icmp_error(("198.51.100.99", 9), refused())  # nobody we know
    a.node.on_icmp_error(BEACON_ADDR, refused())  # the beacon is no peer
    assert [a.manager.send_err_count(x.node_id) for x in (b, c)] == [0, 0]
    for expected in (1, 2):
        a.node.on_icmp_error(b.inside, refused())
        assert a.manager.send_err_count(b.node_id) == expected
        assert a.manager.send_err_count(c.node_id) == 0
    a.node.on_icmp_error(b.inside, refused())
    assert history(a, b)[-1] == (Path.RELAY, PathReason.ICMP_UNREACHABLE)
    assert a.manager.peer_routing(b.node_id).pinned
    assert not a.manager.is_relay_peer(c.node_id)
    assert peer(a, b).next_probe_at is not None


def test_the_beacon_address_is_no_peer_even_when_a_relay_peer_is_aliased_to_it() -> None:
    net = FakeNet()
    a = net.add_node()
    b = net.add_node(relay_only=True)
    b.node.send_app(a.node_id, b"relayed")
    net.run()
    assert peer(a, b).addr == BEACON_ADDR
    a.node.on_icmp_error(BEACON_ADDR, net.icmp_refused())
    assert a.manager.send_err_count(b.node_id) == 0  # spec §10 D20
    probes = peer(a, b).probes_sent
    a.node.datagram_received(encode_message(PunchCommand(BEACON_ADDR)), BEACON_ADDR)
    assert peer(a, b).probes_sent == probes  # never probe the beacon


def test_icmp_errors_on_sends_flip_the_peer_they_concern() -> None:
    net = FakeNet()
    a, b = net.add_node(), net.add_node()
    connected(net, a, b)
    a.sock.fail[b.inside] = errno.ECONNREFUSED
    for _ in range(3):
        a.node.send_app(b.node_id, b"x")
    assert a.node.drops[DropReason.SEND_ERROR] == 3
    assert history(a, b)[-1] == (Path.RELAY, PathReason.ICMP_UNREACHABLE)
    a.node.send_app(b.node_id, b"relayed")
    net.run()
    assert b.io.delivered[-1] == (a.node_id, b"relayed")


def test_other_send_errors_are_counted_but_not_charged() -> None:
    net = FakeNet()
    a, b = net.add_node(), net.add_node()
    connected(net, a, b)
    a.sock.fail[b.inside] = errno.EAGAIN
    a.sock.fail[BEACON_ADDR] = errno.ENOBUFS
    a.node.send_app(b.node_id, b"x")
    a.node.punch(b.node_id)  # the punch request and the probes fail too
    assert a.node.drops[DropReason.SEND_ERROR] == 1 + 1 + 1 + 3
    assert a.manager.send_err_count(b.node_id) == 0
    a.node.set_socket(None)
    a.node.send_app(b.node_id, b"no socket")
    a.node.punch(b.node_id)
    assert a.node.drops[DropReason.SEND_ERROR] == 6 + 1
    assert history(a, b)[-1][0] is Path.DIRECT


# -- registry answers, operator actions, upkeep --------------------------------------


def test_relay_only_cleared_by_a_later_resolve_punches_and_goes_direct() -> None:
    net = FakeNet()
    a = net.add_node()
    b = net.add_node(relay_only=True)
    a.node.send_app(b.node_id, b"x")
    net.run()
    b.node.send_app(a.node_id, b"y")  # relayed: a aliases b to the beacon's address
    net.run()
    assert history(a, b) == [(Path.RELAY, PathReason.RELAY_ONLY)]
    assert peer(a, b).addr == BEACON_ADDR
    # b comes back without relay_only (a restart: no state about a)
    b.node.remove_peer(a.node_id)
    b.node.set_nat_type(NatType.NONE, relay_only=False)
    net.publish(b, relay_only=False)
    sent = len(a.sock.sent)
    net.advance(60.0, step=5.0)  # the peer refresh re-resolves b
    assert history(a, b)[1:] == [
        (Path.DIRECT, PathReason.RELAY_ONLY_CLEARED),
        (Path.DIRECT, PathReason.PUNCHED),
    ]
    assert not a.manager.is_relay_peer(b.node_id)
    assert not a.manager.is_relay_pinned(b.node_id)
    assert peer(a, b).addr == b.endpoint
    assert any(d[0] == MSG_PUNCH_REQUEST for d, _ in a.sock.sent[sent:])
    assert peer(a, b).probes_sent >= 3
    a.node.send_app(b.node_id, b"direct")
    net.run()
    assert b.io.delivered[-1] == (a.node_id, b"direct")
    assert a.sock.sent[-1] == (a.sock.sent[-1][0], b.endpoint)
    assert history(a, b)[-1][0] is Path.DIRECT


def test_registry_turning_a_peer_relay_only_pins_it() -> None:
    net = FakeNet()
    a, b = net.add_node(), net.add_node()
    connected(net, a, b)
    net.publish(b, relay_only=True)
    net.advance(60.0, step=5.0)
    assert history(a, b)[-1] == (Path.RELAY, PathReason.RELAY_ONLY)
    assert peer(a, b).addr == b.endpoint  # the learnt direct address is kept
    assert a.manager.is_relay_pinned(b.node_id)
    assert a.io.resolves.count(b.node_id) == 2


def test_operator_set_relay_punch_and_remove() -> None:
    net = FakeNet()
    a, b = net.add_node(), net.add_node()
    connected(net, a, b)
    assert a.node.set_relay(b.node_id, True, True)
    assert (a.manager.is_relay_peer(b.node_id), a.manager.is_relay_pinned(b.node_id)) == (
        True,
        True,
    )
    assert peer(a, b).events[-1].detail == "pinned"
    relayed = relayed_to(net, a)
    a.node.send_app(b.node_id, b"r")
    net.run()
    assert relayed_to(net, a) == relayed + 1
    assert a.node.set_relay(b.node_id, True, False)
    assert (a.manager.is_relay_peer(b.node_id), a.manager.is_relay_pinned(b.node_id)) == (
        True,
        False,
    )
    assert peer(a, b).events[-1].detail == ""
    sent = len(a.sock.sent)
    assert a.node.set_relay(b.node_id, False, False)
    assert history(a, b)[-3:] == [
        (p, PathReason.OPERATOR) for p in (Path.RELAY,) * 2 + (Path.DIRECT,)
    ]
    assert not a.manager.is_relay_peer(b.node_id)
    assert any(d[0] == MSG_PUNCH_REQUEST for d, _ in a.sock.sent[sent:])  # back to direct: punch
    sent = len(a.sock.sent)
    assert a.node.punch(b.node_id)
    assert a.sock.sent[sent][0][0] == MSG_PUNCH_REQUEST
    assert a.sock.sent[sent + 1] == (b"PILP", b.inside)
    assert a.node.remove_peer(b.node_id)
    assert a.node.peers.get(b.node_id) is None
    assert b.node_id not in a.manager.peer_ids()
    unknown = 0xDEAD
    assert not a.node.set_relay(unknown, True, True)
    assert not a.node.punch(unknown)
    assert not a.node.remove_peer(unknown)


def test_idle_peers_expire_with_their_routing_state() -> None:
    net = FakeNet(node_config=NodeConfig(peer_idle_timeout=30.0))
    a, b = net.add_node(), net.add_node()
    connected(net, a, b)
    net.advance(30.0)
    assert a.node.peers.get(b.node_id) is not None
    net.advance(2.0)
    assert a.node.peers.get(b.node_id) is None
    assert b.node_id not in a.manager.peer_ids()


def test_keepalives_are_sent_when_idle_and_swallowed_on_receipt() -> None:
    net = FakeNet()
    a, b = net.add_node(), net.add_node()
    connected(net, a, b)
    sent = direct_frames(a, b.inside)
    recv = peer(b, a).pkts_recv
    delivered = list(b.io.delivered)
    net.advance(14.0)
    assert direct_frames(a, b.inside) == sent
    net.advance(2.0)
    assert direct_frames(a, b.inside) > sent
    assert peer(b, a).pkts_recv > recv
    assert b.io.delivered == delivered
    assert not a.manager.is_relay_peer(b.node_id)


def test_one_way_traffic_gets_keepalive_answers_and_never_flips() -> None:
    net = FakeNet()
    a, b = net.add_node(), net.add_node()
    connected(net, a, b)
    for _ in range(60):
        net.advance(1.0, each=lambda: send_every_step(net, a, b))
        assert not a.manager.is_relay_peer(b.node_id)
        assert a.manager.blackhole_miss_count(b.node_id) == 0
    assert len(b.io.delivered) == 62
    assert a.io.delivered == [(b.node_id, b"hi")]  # b answered only with keepalives
    assert history(a, b) == [(Path.DIRECT, PathReason.PUNCHED)]
    last = a.manager.last_direct_recv(b.node_id)
    assert last is not None
    assert net.clock.now - last <= 4.0


def test_peer_refresh_re_resolves_known_peers() -> None:
    net = FakeNet(node_config=NodeConfig(peer_refresh_interval=10.0))
    a, b = net.add_node(), net.add_node()
    connected(net, a, b)
    net.advance(10.0)
    assert a.io.resolves == [b.node_id, b.node_id]
    assert history(a, b) == [(Path.DIRECT, PathReason.PUNCHED)]


# -- demultiplexing and malformed input ------------------------------------------


def test_datagrams_that_are_not_frames_are_dropped_and_counted() -> None:
    net = FakeNet()
    a, b = net.add_node(), net.add_node()
    connected(net, a, b)
    state = a.manager.peer_routing(b.node_id)
    cases: list[tuple[bytes, object, DropReason]] = [
        (b"", b.inside, DropReason.EMPTY),
        (b"PI", b.inside, DropReason.SHORT),
        (b"XXXX", b.inside, DropReason.UNKNOWN_MAGIC),
        (FRAME_MAGIC + b"\0" * 8, b.inside, DropReason.SHORT),
        (bytes([0x06]) + b"\0" * 7, BEACON_ADDR, DropReason.SHORT),
        (bytes([0x04, 0x07]), BEACON_ADDR, DropReason.MALFORMED),
        (bytes([0x02, 0x05]), BEACON_ADDR, DropReason.MALFORMED),
        (encode_message(Sync(1, (b.node_id,))), BEACON_ADDR, DropReason.UNEXPECTED_BEACON_MSG),
        (bytes([0x0F]), BEACON_ADDR, DropReason.UNEXPECTED_BEACON_MSG),
    ]
    for raw, src, reason in cases:
        before = a.node.drops[reason]
        a.node.datagram_received(raw, src)  # type: ignore[arg-type]
        assert a.node.drops[reason] == before + 1, reason
    punches = a.node.punches_received
    a.node.datagram_received(b"PILP", b.inside)
    assert a.node.punches_received == punches + 1
    assert a.manager.peer_routing(b.node_id) == state


def test_authentic_frames_with_bad_inner_content() -> None:
    net = FakeNet()
    a, b = net.add_node(), net.add_node()
    connected(net, a, b)
    seal = cipher(b, a, epoch=7)
    for plaintext in (b"", b"\x7f", bytes([InnerType.PROBE]) + b"short"):
        a.node.datagram_received(seal.seal(plaintext), b.inside)
    assert a.node.drops[DropReason.BAD_INNER] == 3
    sent = len(a.sock.sent)
    probe = seal.seal(encode_probe(InnerType.PROBE, 42))
    a.node.datagram_received(encode_message(RelayDeliver(b.node_id, probe)), BEACON_ADDR)
    assert all(addr == BEACON_ADDR or d[:4] != FRAME_MAGIC for d, addr in a.sock.sent[sent:])
    acks = peer(a, b).acks_recv
    a.node.datagram_received(seal.seal(encode_probe(InnerType.PROBE_ACK, 42)), b.inside)
    assert peer(a, b).acks_recv == acks + 1


def test_punch_commands_from_the_beacon_probe_an_unanswered_peer() -> None:
    net = FakeNet()
    a, b = net.add_node(), net.add_node()
    net.blackhole(a, b)
    a.node.send_app(b.node_id, b"x")
    net.run()
    probes = peer(a, b).probes_sent
    assert a.node.punch_commands == 1  # from the beacon, answering our punch request
    a.node.datagram_received(encode_message(PunchCommand(b.inside)), BEACON_ADDR)
    assert peer(a, b).probes_sent == probes + 3
    a.node.datagram_received(encode_message(PunchCommand(("198.51.100.77", 1))), BEACON_ADDR)
    assert a.node.punch_commands == 3
    assert peer(a, b).probes_sent == probes + 3


def test_discover_replies_report_the_public_endpoint() -> None:
    net = FakeNet()
    a = net.add_node(NatKind.CONE)
    assert a.io.observed == [a.endpoint]
    assert a.endpoint is not None
    assert a.endpoint[0].startswith("198.51.100.")
    a.node.datagram_received(encode_message(DiscoverReply(("203.0.113.9", 9))), BEACON_ADDR)
    assert a.io.observed[-1] == ("203.0.113.9", 9)


def test_relayed_frames_from_an_unknown_sender_are_held_too() -> None:
    net = FakeNet()
    a, b = net.add_node(), net.add_node()
    a.io.auto_resolve = False
    frame = cipher(b, a).seal(data(b"via beacon"))
    a.node.datagram_received(encode_message(RelayDeliver(b.node_id, frame)), BEACON_ADDR)
    assert a.io.resolves == [b.node_id]
    a.io.answer_all()
    assert a.io.delivered == [(b.node_id, b"via beacon")]
    assert peer(a, b).relay_recv == 1
    assert a.manager.is_relay_peer(b.node_id)  # a relayed frame from a session holder
    assert history(a, b)[-1] == (Path.RELAY, PathReason.PEER_RELAYED)
