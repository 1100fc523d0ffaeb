"""Port prediction on the in-memory internet: symmetric ↔ port-restricted pairs.

A symmetric router here maps every destination to a random free port from
its own seeded RNG (as the lab's ``masquerade fully-random``), so only the
birthday spray of docs/protocol.md ("Port prediction") can meet it from a
port-restricted peer. The tests check that it does with the setting on and
not with it off, that every bound holds (sockets, probes, pace, bytes,
time), that a failed spray leaves the pair relayed with a reason and closes
every spray socket, and that the socket carrying a path is the only one
kept, and is closed once the path leaves it.
"""

from __future__ import annotations

import pytest

from natroute.sidecar.frames import (
    InnerType,
    Predict,
    PredictPhase,
    decode_inner,
    decode_predict,
    encode_predict,
)
from natroute.sidecar.model import DropReason, PredictConfig
from natroute.sidecar.peers import Path, PathReason, Peer
from natroute.sidecar.prediction import Role, Spray, Stage

from .fakenet import FakeNet, Host

ON = PredictConfig(enabled=True)


def _pair(
    net: FakeNet,
    *,
    hard: PredictConfig | None = ON,
    easy: PredictConfig | None = ON,
    easy_kind: str = "port-restricted",
) -> tuple[Host, Host]:
    net.router("r-hard", "symmetric")
    net.router("r-easy", easy_kind)
    h = net.host("hard", behind="r-hard", predict=hard)
    e = net.host("easy", behind="r-easy", predict=easy)
    return h, e


def peer(a: Host, b: Host) -> Peer:
    found = a.engine.peers.get(b.node_id)
    assert found is not None
    return found


def predict_frames(net: FakeNet) -> int:
    """PREDICT frames the relay carried (the beacons see them as relay messages)."""
    return sum(1 for d in net.delivered if d.data[:1] == b"\x05" and d.dropped == "")


def test_symmetric_and_port_restricted_go_direct_with_prediction_on() -> None:
    net = FakeNet(seed=1)
    h, e = _pair(net)

    net.app_send(h, e, b"first")
    assert e.delivered == [(h.node_id, b"first")]  # relayed at once, as ever
    net.app_send(e, h, b"answer")
    net.advance(10.0)

    assert (peer(h, e).path, peer(h, e).reason) == (Path.DIRECT, PathReason.PREDICTED)
    assert (peer(e, h).path, peer(e, h).reason) == (Path.DIRECT, PathReason.PREDICTED)
    # the hard side's path runs through the one spray socket kept; the others are closed
    kept = peer(h, e).via
    assert kept != 0
    assert list(h.sockets) == [kept]
    assert h.engine.spray_sockets_open == 1
    assert h.engine.kept_sockets == {kept: e.node_id}
    assert e.sockets == {}  # the easy side never opens one
    assert peer(h, e).chosen == e.engine.observer.endpoint
    assert peer(e, h).chosen is not None
    assert peer(e, h).chosen[0] == h.engine.observer.endpoint[0]  # type: ignore[index]
    for host in (h, e):
        counters = host.engine.predict_counters
        assert (counters.started, counters.succeeded, counters.failed) == (1, 1, 0)

    relayed = peer(e, h).relay_recv, peer(h, e).relay_recv
    sent_from_kept = h.sent_from[kept]
    net.app_send(h, e, b"direct one way")
    net.app_send(e, h, b"and back")
    assert e.delivered[-1] == (h.node_id, b"direct one way")
    assert h.delivered[-1] == (e.node_id, b"and back")
    assert (peer(e, h).relay_recv, peer(h, e).relay_recv) == relayed  # not through the beacon
    assert h.sent_from[kept] > sent_from_kept

    # supervised like any direct path: keepalive probes answered through the kept socket
    net.advance(30.0)
    assert peer(h, e).path is Path.DIRECT
    assert peer(h, e).unanswered == 0
    assert list(h.sockets) == [kept]


def test_with_prediction_off_the_pair_stays_relayed_and_opens_nothing() -> None:
    net = FakeNet(seed=1)
    h, e = _pair(net, hard=None, easy=None)

    net.app_send(h, e, b"first")
    net.app_send(e, h, b"answer")
    net.advance(20.0)

    assert peer(h, e).path is Path.RELAY
    assert peer(h, e).reason is PathReason.LOCAL_SYMMETRIC_NAT
    assert peer(e, h).reason is PathReason.RELAY_ONLY
    assert h.most_sockets == 0
    assert h.engine.predict_counters.started == 0
    assert e.engine.predict_counters.probes_sent == 0


def test_an_easy_side_with_prediction_off_declines_and_no_socket_opens() -> None:
    net = FakeNet(seed=1)
    h, e = _pair(net, easy=None)

    net.app_send(h, e, b"first")
    net.advance(10.0)

    assert peer(h, e).path is Path.RELAY
    assert peer(h, e).reason is PathReason.PREDICTION_FAILED
    assert "declined (disabled)" in peer(h, e).events[-1].detail
    assert e.engine.predict_counters.declined == 1
    assert h.most_sockets == 0
    assert h.engine.predict_counters.failed == 1


def test_a_failed_spray_falls_back_to_the_relay_with_a_reason_and_closes_every_socket() -> None:
    # 8 mappings and 64 probes over 64 512 ports: a hit is a 1-in-125 chance (not this seed)
    small = PredictConfig(enabled=True, sockets=8, probes=64, rate=32.0, burst=8, timeout=4.0)
    net = FakeNet(seed=3)
    h, e = _pair(net, hard=small, easy=small)

    net.app_send(h, e, b"first")
    net.advance(10.0)

    for a, b in ((h, e), (e, h)):
        assert peer(a, b).path is Path.RELAY
        assert peer(a, b).reason is PathReason.PREDICTION_FAILED
        assert a.engine.predict_counters.failed == 1
        assert a.engine.sprays == {}
    assert h.most_sockets == 8
    assert h.sockets == {}
    assert h.engine.spray_sockets_open == 0
    assert h.engine.predict_counters.sockets_closed == 8
    assert e.engine.predict_counters.probes_sent == 64
    assert "found no open mapping" in peer(h, e).events[-1].detail
    net.app_send(h, e, b"still delivered")
    assert e.delivered[-1] == (h.node_id, b"still delivered")  # through the relay

    # the next spray waits for the backoff (30 s), then doubles it
    net.advance(15.0)
    assert h.engine.predict_counters.started == 1
    net.advance(25.0)
    assert h.engine.predict_counters.started == 2
    assert h.engine.predict_counters.failed == 2
    assert peer(h, e).predict_backoff == 60.0


def test_the_spray_bounds_hold_sockets_probes_pace_bytes_and_time() -> None:
    cfg = PredictConfig(enabled=True, sockets=40, probes=400, rate=100.0, burst=20, timeout=6.0)
    net = FakeNet(seed=3)
    h, e = _pair(net, hard=cfg, easy=cfg)
    net.app_send(h, e, b"first")

    probes_at: list[tuple[float, int]] = []
    net.advance(
        12.0,
        step=0.25,
        each=lambda: probes_at.append((net.clock.now, e.engine.predict_counters.probes_sent)),
    )

    assert h.most_sockets <= 40
    assert h.engine.predict_counters.probes_sent <= 40 + 0  # one probe per spray socket
    easy = e.engine.predict_counters
    assert 0 < easy.probes_sent <= 400
    start = next(t for t, n in probes_at if n > 0) - 0.25
    for t, n in probes_at:
        assert n <= 20 + 100 * max(0.0, t - start) + 1e-9  # burst, then the pace
    probe_size = easy.bytes_sent / easy.probes_sent
    assert probe_size < 64  # a PROBE frame: header, type, nonce, tag
    spray = [ev for ev in peer(h, e).events if ev.reason is PathReason.PREDICTION_FAILED]
    if spray:  # a miss ends by the timeout after GO at the latest
        assert h.engine.sprays == {}
        assert h.sockets == {}
        assert spray[0].at - start <= 6.0 + 0.5


def test_the_spray_budget_stops_the_probes_and_is_apart_from_the_dialling_budget() -> None:
    cfg = PredictConfig(
        enabled=True, sockets=4, probes=1024, budget_bytes=2000.0, budget_rate=1.0, timeout=3.0
    )
    net = FakeNet(seed=3)
    h, e = _pair(net, hard=cfg, easy=cfg)
    dial_refused = e.engine.budget.refused
    net.app_send(h, e, b"first")
    net.advance(8.0)

    easy = e.engine.predict_counters
    assert easy.bytes_sent <= 2000 + 8.0  # the burst, and 8 s of refill at 1 B/s
    assert e.engine.drops[DropReason.SPRAY_BUDGET] >= 1
    assert easy.probes_sent < 1024
    assert e.engine.budget.refused == dial_refused  # spray probes never draw on it


def test_the_kept_socket_closes_when_the_path_leaves_it() -> None:
    net = FakeNet(seed=1)
    h, e = _pair(net)
    net.app_send(h, e, b"first")
    net.app_send(e, h, b"answer")
    net.advance(10.0)
    assert peer(h, e).reason is PathReason.PREDICTED
    kept = peer(h, e).via

    net.block(h, e)
    net.advance(30.0, each=lambda: net.app_send(h, e, b"x"))

    assert peer(h, e).path is Path.RELAY
    assert kept not in h.sockets
    assert h.engine.kept_sockets == {}
    assert peer(h, e).via == 0
    assert all(s.via == 0 for s in peer(h, e).candidates.values())


def test_removing_the_peer_closes_its_sockets() -> None:
    net = FakeNet(seed=1)
    h, e = _pair(net)
    net.app_send(h, e, b"first")
    net.app_send(e, h, b"answer")
    net.advance(10.0)
    assert len(h.sockets) == 1

    assert h.engine.remove_peer(e.node_id)
    net.flush(h)
    assert h.sockets == {}
    assert h.engine.spray_sockets_open == 0


def test_two_symmetric_nodes_never_spray() -> None:
    net = FakeNet(seed=1)
    net.router("r1", "symmetric")
    net.router("r2", "symmetric")
    a = net.host("a", behind="r1", predict=ON)
    b = net.host("b", behind="r2", predict=ON)
    net.app_send(a, b, b"first")
    net.advance(20.0)
    assert peer(a, b).path is Path.RELAY
    assert a.most_sockets == b.most_sockets == 0  # the peer registered relay_only: no offer


def _offer(net: FakeNet, src: Host, dst: Host, addr: tuple[str, int] | None) -> None:
    """``src`` offers a spray to ``dst`` with ``addr`` (forged where the test says),
    as a real offer of its engine would (session 7)."""
    now = net.clock()
    src.engine.sprays[dst.node_id] = Spray(
        dst.node_id, 7, Role.HARD, Stage.OFFERED, now, now + ON.timeout
    )
    message = encode_predict(Predict(PredictPhase.OFFER, 7, 256, addr))
    src.engine._send_relayed(peer(src, dst), message, now)
    net.flush(src)
    net.run()


@pytest.mark.parametrize(
    ("kinds", "addr_of", "why"),
    [
        (("symmetric", "symmetric"), "hard", "both_dependent"),
        (("symmetric", "port-restricted"), "elsewhere", "bad_address"),
        (("symmetric", "port-restricted"), "none", "bad_address"),
    ],
)
def test_offers_the_easy_side_must_decline(kinds: tuple[str, str], addr_of: str, why: str) -> None:
    net = FakeNet(seed=1)
    net.router("r1", kinds[0])
    net.router("r2", kinds[1])
    a = net.host("a", behind="r1", predict=ON)
    b = net.host("b", behind="r2", predict=ON)
    net.app_send(a, b, b"first")
    endpoint = a.engine.observer.endpoint
    assert endpoint is not None
    addr = {"hard": endpoint[0], "elsewhere": "192.0.2.77", "none": None}[addr_of]

    _offer(net, a, b, (addr, 0) if addr else None)

    assert b.engine.predict_counters.declined == 1
    assert b.engine.predict_counters.probes_sent == 0
    assert b.engine.sprays == {}
    assert a.engine.sprays == {}  # the decline ended the offer
    assert a.engine.predict_counters.failed == 1
    assert a.most_sockets == 0
    assert peer(a, b).reason is PathReason.PREDICTION_FAILED
    assert f"declined ({why})" in peer(a, b).events[-1].detail


def test_a_hostile_peer_cannot_make_the_easy_side_spray_again_and_again() -> None:
    net = FakeNet(seed=3)
    small = PredictConfig(enabled=True, sockets=4, probes=32, timeout=2.0)
    h, e = _pair(net, hard=small, easy=small)
    net.app_send(h, e, b"first")
    net.advance(8.0)
    assert e.engine.predict_counters.started == 1
    probes = e.engine.predict_counters.probes_sent
    # an offer right after the failed one is declined: the backoff is the easy side's own
    endpoint = h.engine.observer.endpoint
    assert endpoint is not None
    _offer(net, h, e, (endpoint[0], 0))
    assert e.engine.predict_counters.declined == 1
    assert e.engine.predict_counters.probes_sent == probes


def test_spray_sockets_accept_only_their_peers_frames() -> None:
    net = FakeNet(seed=1)
    h, e = _pair(net)
    net.app_send(h, e, b"first")
    net.app_send(e, h, b"answer")
    net.advance(10.0)
    kept = peer(h, e).via
    before = h.engine.drops[DropReason.WRONG_SOCKET]
    src = ("203.0.113.9", 9)
    h.engine.datagram_received(b"\x06" + bytes(8), src, net.clock(), kept)  # a beacon message
    h.engine.datagram_received(b"PILS" + bytes(40), src, net.clock(), kept)  # not e's frame
    h.engine.datagram_received(b"PILS" + bytes(40), src, net.clock(), 999)  # no such socket
    assert h.engine.drops[DropReason.WRONG_SOCKET] == before + 3
    assert peer(h, e).path is Path.DIRECT


def test_a_full_set_of_sprays_is_one_at_a_time_on_the_hard_side() -> None:
    net = FakeNet(seed=5)
    net.router("r-hard", "symmetric")
    h = net.host("hard", behind="r-hard", predict=ON)
    easies = []
    for i in range(3):
        net.router(f"r{i}", "port-restricted")
        easies.append(net.host(f"e{i}", behind=f"r{i}", predict=ON))
    for e in easies:
        net.app_send(h, e, b"hi")

    most_hard = 0

    def watch() -> None:
        nonlocal most_hard
        most_hard = max(most_hard, sum(s.role is Role.HARD for s in h.engine.sprays.values()))

    net.advance(40.0, each=watch)
    assert most_hard == 1
    assert h.most_sockets <= ON.sockets + 2  # one spray's sockets, plus kept ones
    direct = [e for e in easies if peer(h, e).path is Path.DIRECT]
    assert len(direct) >= 2
    assert len(h.sockets) == len(direct)  # one kept socket per predicted path


@pytest.mark.parametrize(
    ("message", "wire"),
    [
        (
            Predict(PredictPhase.OFFER, 0x01020304, 256, ("198.51.100.7", 0)),
            "06 01 01020304 0100 04 c6336407 0000",
        ),
        (
            Predict(PredictPhase.ACCEPT, 9, 1024, ("2001:db8::1", 4000)),
            "06 02 00000009 0400 06 20010db8000000000000000000000001 0fa0",
        ),
        (Predict(PredictPhase.GO, 9, 255), "06 03 00000009 00ff 00"),
        (Predict(PredictPhase.DECLINE, 9, 2), "06 04 00000009 0002 00"),
        (Predict(PredictPhase.DONE, 9, 1024), "06 05 00000009 0400 00"),
    ],
)
def test_predict_frames_golden_and_truncated(message: Predict, wire: str) -> None:
    data = bytes.fromhex(wire.replace(" ", ""))
    assert encode_predict(message) == data
    assert decode_inner(data) == (InnerType.PREDICT, data[1:])
    assert decode_predict(data[1:]) == message
    for cut in range(1, len(data)):
        assert decode_inner(data[:cut]) is None
    assert decode_inner(data + b"\x00") is None  # trailing bytes
    assert decode_predict(b"\x09" + data[2:]) is None  # an unknown phase
    assert decode_predict(data[1:7] + b"\x05") is None  # an unknown family
