"""The peer engine on the in-memory internet: every NAT pair kind, and the path machinery.

The matrix tests build two hosts behind the NATs of one pair kind, let the
applications send both ways, and check three things the engine promises
(docs/protocol.md, "Candidates and checks"): the first datagram is delivered
at once (through the relay), a pair whose NATs allow a direct path is direct
within a second of fake time, and a pair whose NATs do not stays on the relay
with a reason that says why.
"""

from __future__ import annotations

import pytest

from natroute.routing.wire import DiscoverReply, encode_message
from natroute.sidecar.candidates import Candidate, CandidateKind
from natroute.sidecar.engine import Engine
from natroute.sidecar.model import DropReason, NatType, NodeConfig
from natroute.sidecar.peers import Path, PathReason, Peer

from .fakenet import BEACON_A, FakeNet, Host

#: Kinds of node: None is public (no NAT).
KINDS = ("public", "full-cone", "address-restricted", "port-restricted", "symmetric")


def direct_possible(a: str, b: str) -> bool:
    """Whether two NATs physically allow a direct UDP path (no port prediction).

    A public or full-cone side answers whatever source port the other side's
    NAT picks, so peer-reflexive learning finds it; an address-restricted side
    opens for the other side's IP when it probes the other side's public
    address, which symmetric NATs keep. Only a symmetric NAT facing a
    port-restricted or symmetric one hides the port the other side must hit.
    """
    if "symmetric" not in (a, b):
        return True
    other = b if a == "symmetric" else a
    return other in ("public", "full-cone", "address-restricted")


def _host(net: FakeNet, name: str, kind: str) -> Host:
    if kind == "public":
        return net.host(name)
    net.router(f"r-{name}", kind)
    return net.host(name, behind=f"r-{name}")


def peer(a: Host, b: Host) -> Peer:
    found = a.engine.peers.get(b.node_id)
    assert found is not None, f"{a.name} does not know {b.name}"
    return found


def direct_pair(net: FakeNet) -> tuple[Host, Host]:
    """Two public hosts whose first datagram made them direct."""
    a = net.host("a")
    b = net.host("b")
    net.app_send(a, b, b"x")
    net.advance(1.0)
    assert path(a, b)[0] is Path.DIRECT
    return a, b


def path(a: Host, b: Host) -> tuple[Path | None, PathReason]:
    p = peer(a, b)
    return p.path, p.reason


@pytest.mark.parametrize("kind_b", KINDS)
@pytest.mark.parametrize("kind_a", KINDS)
def test_every_pair_kind_delivers_at_once_and_goes_direct_where_the_nats_allow(
    kind_a: str, kind_b: str
) -> None:
    net = FakeNet()
    a = _host(net, "a", kind_a)
    b = _host(net, "b", kind_b)

    net.app_send(a, b, b"first")

    assert b.delivered == [(a.node_id, b"first")]  # through the relay, before any timer
    net.app_send(b, a, b"answer")
    assert a.delivered == [(b.node_id, b"answer")]
    net.advance(1.0)
    if direct_possible(kind_a, kind_b):
        assert path(a, b) == (Path.DIRECT, PathReason.CHECKED)
        assert path(b, a) == (Path.DIRECT, PathReason.CHECKED)
        assert not a.manager.is_relay_peer(b.node_id)
    else:
        net.advance(5.0)
        assert path(a, b)[0] is Path.RELAY
        assert path(a, b)[1] in (PathReason.LOCAL_SYMMETRIC_NAT, PathReason.RELAY_ONLY)
        assert path(b, a)[1] in (PathReason.LOCAL_SYMMETRIC_NAT, PathReason.RELAY_ONLY)
    relayed_before = peer(b, a).relay_recv
    net.app_send(a, b, b"later")
    assert b.delivered[-1] == (a.node_id, b"later")
    if direct_possible(kind_a, kind_b):
        assert peer(b, a).relay_recv == relayed_before  # it came the direct way


def test_symmetric_to_public_goes_direct_through_a_peer_reflexive_candidate() -> None:
    net = FakeNet()
    pub = net.host("pub")
    net.router("r", "symmetric")
    sym = net.host("sym", behind="r")
    assert sym.engine.nat_type is NatType.ENDPOINT_DEPENDENT

    net.app_send(sym, pub, b"hello")
    net.advance(1.0)

    seen_by_pub = peer(pub, sym)
    assert seen_by_pub.path is Path.DIRECT
    chosen = seen_by_pub.candidates[seen_by_pub.chosen]  # type: ignore[index]
    assert chosen.candidate.kind.value == "prflx"
    assert chosen.addr != net.registry[sym.node_id].candidates[-1].addr  # not the beacon's view


def test_two_hosts_on_one_lan_go_direct_over_their_lan_addresses() -> None:
    net = FakeNet()
    net.router("home", "port-restricted")  # no hairpinning
    a = net.host("a", behind="home", port=4000)
    b = net.host("b", behind="home", port=4001)

    net.app_send(a, b, b"hi neighbour")
    net.advance(1.0)

    assert path(a, b)[0] is Path.DIRECT
    assert peer(a, b).chosen == b.inside
    assert peer(b, a).chosen == a.inside


@pytest.mark.parametrize(("outer", "direct"), [("port-restricted", True), ("symmetric", False)])
def test_carrier_grade_nat_pairs(outer: str, direct: bool) -> None:
    net = FakeNet()
    net.router("carrier-1", outer)
    net.router("home-1", "port-restricted", behind="carrier-1")
    a = net.host("a", behind="home-1")
    net.router("carrier-2", "port-restricted")
    net.router("home-2", "port-restricted", behind="carrier-2")
    b = net.host("b", behind="home-2")

    net.app_send(a, b, b"across two carriers")
    net.advance(6.0)

    assert b.delivered[0] == (a.node_id, b"across two carriers")
    assert (path(a, b)[0] is Path.DIRECT) is direct


def test_a_peer_without_candidates_is_relayed_visibly_from_the_first_datagram() -> None:
    net = FakeNet()
    a = net.host("a")
    net.router("r", "port-restricted")
    b = net.host("b", behind="r")
    info = net.registry[b.node_id]
    net.registry[b.node_id] = type(info)(info.node_id, info.x25519_key, candidates=())

    net.app_send(a, b, b"x")

    assert b.delivered == [(a.node_id, b"x")]
    assert path(a, b) == (Path.RELAY, PathReason.NO_CANDIDATES)
    # b's CALL_ME_MAYBE and probes still teach a where b is: the pair goes direct
    net.advance(1.0)
    assert path(a, b)[0] is Path.DIRECT


def test_the_first_datagrams_never_wait_for_the_checks() -> None:
    net = FakeNet()
    net.router("r1", "port-restricted")
    net.router("r2", "symmetric")
    a = net.host("a", behind="r1")
    b = net.host("b", behind="r2")

    for i in range(5):
        net.app_send(a, b, b"%d" % i)

    assert [p for _, p in b.delivered] == [b"0", b"1", b"2", b"3", b"4"]
    assert net.clock.now == pytest.approx(1000.0)  # no time passed


def test_a_blackholed_direct_path_moves_to_the_relay_and_heals() -> None:
    cfg = NodeConfig(keepalive_interval=1.0, probe_initial_interval=1.0, probe_max_interval=2.0)
    net = FakeNet(node_config=cfg)
    a = net.host("a")
    b = net.host("b")
    net.app_send(a, b, b"x")
    net.advance(1.0)
    assert path(a, b)[0] is Path.DIRECT

    net.block(a, b)
    net.advance(40.0, each=lambda: net.app_send(a, b, b"keep going"))

    assert path(a, b) == (Path.RELAY, PathReason.BLACKHOLE)
    assert b.delivered[-1] == (a.node_id, b"keep going")  # the relay carried it

    net.unblock()
    net.advance(5.0, each=lambda: net.app_send(a, b, b"healed"))
    assert path(a, b) == (Path.DIRECT, PathReason.DIRECT_RESTORED)


def test_a_one_way_path_is_detected_and_relayed() -> None:
    cfg = NodeConfig(keepalive_interval=1.0, probe_initial_interval=1.0, probe_max_interval=2.0)
    net = FakeNet(node_config=cfg)
    a = net.host("a")
    b = net.host("b")
    net.app_send(a, b, b"x")
    net.advance(1.0)
    assert path(a, b)[0] is Path.DIRECT

    net.block(a, b, one_way=True)  # a's datagrams to b are lost; b's still arrive

    def both_talk() -> None:
        net.app_send(b, a, b"b talks")
        net.app_send(a, b, b"a")

    net.advance(6.0, each=both_talk)

    assert path(a, b) == (Path.RELAY, PathReason.ONE_WAY)
    assert b.delivered[-1] == (a.node_id, b"a")  # a's data goes around through the relay


def test_icmp_errors_on_the_chosen_address_move_the_peer_to_the_relay() -> None:
    net = FakeNet()
    a, b = direct_pair(net)

    b.open = False  # its socket closed: the kernel answers port unreachable
    for _ in range(3):
        net.app_send(a, b, b"anyone?")

    assert path(a, b) == (Path.RELAY, PathReason.ICMP_UNREACHABLE)


def test_relay_only_peers_start_on_the_relay_but_are_still_checked() -> None:
    net = FakeNet()
    a = net.host("a")
    net.router("r", "port-restricted")
    b = net.host("b", behind="r", relay_only=True)

    net.app_send(a, b, b"x")
    assert path(a, b)[0] is Path.RELAY
    net.advance(1.0)

    assert path(a, b) == (Path.DIRECT, PathReason.CHECKED)


def test_a_forced_relay_node_publishes_no_address_and_never_answers_directly() -> None:
    net = FakeNet()
    a = net.host("a")
    hidden = net.host("hidden", node_config=NodeConfig(force_relay=True), relay_only=True)
    assert hidden.engine.local_candidates == []

    net.app_send(a, hidden, b"x")
    net.app_send(hidden, a, b"y")
    net.advance(8.0)

    assert path(a, hidden) == (Path.RELAY, PathReason.RELAY_ONLY)
    assert path(hidden, a) == (Path.RELAY, PathReason.FORCED_RELAY)
    assert hidden.delivered
    assert a.delivered


def test_operator_pin_unpin_punch_ping_and_forget() -> None:
    net = FakeNet()
    a = net.host("a")
    b = net.host("b")
    net.app_send(a, b, b"x")
    net.advance(1.0)
    now = net.clock()

    assert a.engine.set_relay(b.node_id, True, True, now)
    assert path(a, b) == (Path.RELAY, PathReason.OPERATOR)
    net.advance(30.0)
    assert path(a, b) == (Path.RELAY, PathReason.OPERATOR)  # pinned: no checks

    assert a.engine.set_relay(b.node_id, False, False, net.clock())
    net.flush(a)
    net.run()
    net.advance(1.0)
    assert path(a, b)[0] is Path.DIRECT

    sent = a.engine.ping(b.node_id, net.clock())
    net.flush(a)
    net.run()
    assert {p for _, p in sent} == {"direct", "relay"}
    answered = {nonce for nonce, _, _ in peer(a, b).ping_results}
    assert {nonce for nonce, _ in sent} <= answered

    assert a.engine.punch(b.node_id, net.clock())
    assert a.engine.remove_peer(b.node_id)
    assert a.engine.peers.get(b.node_id) is None
    assert not a.engine.set_relay(b.node_id, True, True, net.clock())
    assert not a.engine.punch(b.node_id, net.clock())
    assert a.engine.ping(b.node_id, net.clock()) == []
    # met again in the same epoch: the counters continue, b does not see replays
    net.app_send(a, b, b"again")
    assert b.delivered[-1] == (a.node_id, b"again")


def test_idle_peers_expire_with_their_manager_state() -> None:
    net = FakeNet(node_config=NodeConfig(peer_idle_timeout=20.0))
    a = net.host("a")
    b = net.host("b")
    net.app_send(a, b, b"x")
    net.advance(25.0, step=1.0)
    assert a.engine.peers.get(b.node_id) is None
    assert b.node_id not in a.manager.peer_ids()


def test_unknown_senders_are_looked_up_once_and_remembered_as_unknown() -> None:
    net = FakeNet()
    net.auto_answer = False
    a = net.host("a")
    b = net.host("b")
    b.engine.app_send(a.node_id, b"x", net.clock())  # b's frames reach a via the relay
    net.auto_answer = True
    net.answer(b, a.node_id)
    net.run()
    assert a.lookups == [] or a.lookups == [b.node_id]

    ghost = 0xDEAD
    for _ in range(5):
        a.engine.app_send(ghost, b"boo", net.clock())
        net.flush(a)
    assert a.lookups.count(ghost) == 1
    a.engine.app_send(ghost, b"boo", net.clock())
    net.flush(a)
    assert a.lookups.count(ghost) == 1  # "unknown" is remembered
    assert a.engine.drops[DropReason.UNRESOLVED] >= 2


def test_spoofed_discover_replies_are_rejected_and_a_real_change_is_adopted() -> None:
    net = FakeNet()
    net.router("r", "port-restricted")
    a = net.host("a", behind="r")
    endpoint = a.engine.observer.endpoint
    assert endpoint is not None
    lie = encode_message(DiscoverReply(("192.0.2.66", 1234)))

    for _ in range(20):  # a flood while a keepalive is outstanding
        net.keepalive(a)
        net.inject(lie, BEACON_A, endpoint)
        net.run()
    net.advance(5.0)

    assert a.engine.observer.endpoint == endpoint
    assert a.engine.observer.rejected >= 1

    net.routers["r"].forget()  # the router reboots: a new public port
    net.keepalive(a)
    net.advance(3.0)
    assert a.engine.observer.endpoint != endpoint


def test_a_changed_nat_is_reclassified() -> None:
    net = FakeNet()
    router = net.router("r", "symmetric")
    a = net.host("a", behind="r")
    assert a.engine.nat_type is NatType.ENDPOINT_DEPENDENT
    router.spec = net.routers["r"].spec.__class__(
        router.spec.mapping.__class__.ENDPOINT_INDEPENDENT, router.spec.filtering
    )
    router.forget()
    assert net.check_nat(a) is NatType.ENDPOINT_INDEPENDENT


def test_the_engine_never_sends_to_its_own_sockets() -> None:
    net = FakeNet()
    a = net.host("a")
    b = net.host("b")
    own_app = ("198.51.100.1", 4100)
    a.engine.self_addrs.add(own_app)
    info = net.registry[b.node_id]
    bad = (Candidate(own_app, CandidateKind.HOST), Candidate(a.inside, CandidateKind.HOST))
    net.registry[b.node_id] = type(info)(
        info.node_id, info.x25519_key, candidates=bad + info.candidates
    )
    net.app_send(a, b, b"x")
    net.advance(2.0)

    sent_by_a = [d for d in net.delivered + net.dropped if d.src == a.inside]
    assert sent_by_a
    assert all(d.dst not in (own_app, a.inside) for d in sent_by_a)
    assert a.engine.drops[DropReason.BAD_CANDIDATE] >= 2


def test_a_send_the_gate_refuses_inside_write_frame_is_counted_once() -> None:
    """The Manager re-raises the gate's refusal as a SendError; it is not a send error too."""
    net = FakeNet()
    a, b = direct_pair(net)
    chosen = peer(a, b).chosen
    assert chosen is not None
    a.engine.self_addrs.add(chosen)  # now one of a's own sockets: the gate refuses it
    net.clock.advance(9.0)  # past the blackhole threshold: the send goes through write_frame
    before = a.engine.drops[DropReason.SELF_ADDRESSED]
    a.engine.app_send(b.node_id, b"y", net.clock())
    assert a.engine.drops[DropReason.SELF_ADDRESSED] == before + 1
    assert a.engine.drops[DropReason.SEND_ERROR] == 0
    assert a.engine.datagrams_to_send() == []


def test_engine_is_fed_only_inputs() -> None:
    """Nothing but inputs moves the engine: no clock is read inside it."""
    net = FakeNet()
    engine: Engine = net.host("a").engine
    before = net.clock()
    engine.tick(before + 3600.0)  # an hour passes for the engine only
    assert net.clock() == before


def test_a_batch_from_the_application_goes_out_as_one_datagram_at_a_time_would() -> None:
    net = FakeNet()
    net.router("rp", "port-restricted")
    net.router("rs", "symmetric")
    a = net.host("a", behind="rp")
    b = net.host("b")  # public: direct
    c = net.host("c", behind="rs")  # symmetric behind port-restricted: relayed
    d = net.host("d")  # not yet looked up
    net.app_send(a, b, b"hello")
    net.app_send(a, c, b"hello")
    net.advance(1.0)
    assert path(a, b)[0] is Path.DIRECT
    assert path(a, c)[0] is Path.RELAY
    sent_before = peer(a, b).pkts_sent

    def to(host: Host, payload: bytes) -> bytes:
        return host.node_id.to_bytes(4, "big") + payload

    batch = [to(b, b"b1"), to(b, b"b2"), to(c, b"c1"), to(b, b"b3"), to(d, b"d1")]
    a.engine.app_send_many(batch, net.clock())
    net.flush(a)
    net.run()

    assert b.delivered[-3:] == [(a.node_id, b"b1"), (a.node_id, b"b2"), (a.node_id, b"b3")]
    assert c.delivered[-1] == (a.node_id, b"c1")
    assert d.delivered == [(a.node_id, b"d1")]  # held while a looked d up
    assert peer(a, b).pkts_sent == sent_before + 3


def test_a_received_batch_is_opened_and_checked_like_single_datagrams() -> None:
    net = FakeNet()
    a = net.host("a")
    b = net.host("b")
    net.app_send(a, b, b"hello")
    net.advance(1.0)
    assert path(a, b)[0] is Path.DIRECT
    src = peer(b, a).chosen
    assert src is not None
    net.run()
    b.delivered.clear()
    b.engine.deliveries()

    a.engine.app_send_many(
        [b.node_id.to_bytes(4, "big") + b"%d" % i for i in range(3)], net.clock()
    )
    frames = [data for data, _ in a.engine.datagrams_to_send()]
    drops = dict(b.engine.drops)
    replayed = frames[0]
    batch = [frames[0], b"JUNK-not-a-frame", frames[1], replayed, frames[2]]
    b.engine.datagrams_received([(data, src) for data in batch], net.clock())

    assert b.engine.deliveries() == [(a.node_id, b"0"), (a.node_id, b"1"), (a.node_id, b"2")]
    assert b.engine.drops[DropReason.UNKNOWN_MAGIC] == drops.get(DropReason.UNKNOWN_MAGIC, 0) + 1
    assert b.engine.drops[DropReason.AUTH_FAILED] == drops.get(DropReason.AUTH_FAILED, 0) + 1
