"""Port prediction's shell on real UDP (127.0.0.1): spray sockets by index.

:class:`~natroute.sidecar.sprays.SpraySockets` opens, reads, sends from and
closes real sockets; a running sidecar opens the sockets its engine asks for,
sends each spray probe from the socket it names, hands every answer to the
engine with that socket's index, keeps the one that carries the path and
closes the rest (docs/protocol.md, "Port prediction"). Loopback has no NAT,
so the test walks the hard side's half of a spray by hand from the ACCEPT on.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from natroute.routing.types import Addr
from natroute.sidecar.candidates import SelfAddrs
from natroute.sidecar.frames import Predict, PredictPhase
from natroute.sidecar.peers import Path as PeerPath
from natroute.sidecar.peers import PathReason
from natroute.sidecar.prediction import Role, Spray, Stage
from natroute.sidecar.sprays import SpraySockets
from natroute.sidecar.testing import running_sidecar, running_stack

from .helpers import Pump, node_id, peer_of, wait_for


@pytest.mark.asyncio
async def test_spray_sockets_open_read_send_and_close_by_index() -> None:
    got: list[tuple[int, bytes, Addr]] = []
    batches = 0

    def batch_end() -> None:
        nonlocal batches
        batches += 1

    own = SelfAddrs()
    sprays = SpraySockets(
        "127.0.0.1", lambda i, d, a: got.append((i, d, a)), batch_end, own, limit=4
    )
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind(("127.0.0.1", 0))
    other.setblocking(False)
    try:
        assert sprays.open([3, 5, 9, 11, 12]) == [3, 5, 9, 11]  # the limit
        assert sprays.open_failures == 1
        assert len(sprays) == 4
        addrs = {i: sprays.addr(i) for i in (3, 5, 9, 11)}
        assert len({a for a in addrs.values()}) == 4
        for addr in addrs.values():
            assert addr is not None
            assert addr in own  # never a destination while it lives

        for index, addr in addrs.items():
            assert addr is not None
            other.sendto(b"to-%d" % index, addr)
        await wait_for(lambda: len(got) == 4, "four datagrams, one per socket", 5)
        assert {(i, d) for i, d, _ in got} == {(i, b"to-%d" % i) for i in addrs}
        assert batches >= 1

        target = other.getsockname()
        assert sprays.send([(5, b"from-5", target), (7, b"nobody", target)]) == []
        assert sprays.send_dropped == 1  # index 7 was never opened
        assert sprays.sent == 1
        loop = asyncio.get_running_loop()
        data, src = await asyncio.wait_for(loop.sock_recvfrom(other, 100), 5)
        assert (data, (src[0], src[1])) == (b"from-5", addrs[5])

        sprays.close([3, 5, 42])
        assert len(sprays) == 2
        assert addrs[3] not in own
        assert addrs[5] not in own
        assert sprays.send([(5, b"late", target)]) == []
        assert sprays.send_dropped == 2
    finally:
        sprays.close_all()
        other.close()
    assert len(sprays) == 0
    assert all(a not in own for a in addrs.values())


@pytest.mark.asyncio
async def test_a_sidecar_sprays_from_real_sockets_keeps_the_one_that_answers(
    tmp_path: Path,
) -> None:
    settings = {"predict": True, "predict_sockets": 6, "probe_initial_interval": 60.0}
    async with (
        running_stack(tmp_path) as stack,
        running_sidecar(stack.sidecar_settings("a", **settings)) as a,
        running_sidecar(stack.sidecar_settings("b", **settings)) as b,
        Pump(a, b) as pump,
    ):
        await pump.delivered(3, limit=10)
        b_id = node_id(b)
        engine = a.engine
        peer = peer_of(a, b)
        await wait_for(lambda: peer.path is PeerPath.DIRECT, "a direct path to b", 10)
        assert b.bound_addr is not None
        # the relay carries a's frames to b from now on; a's checks wait a minute
        now = a.clock()
        engine.set_relay(b_id, True, False, now)
        # a is the hard side and b accepted: from here on, the real code runs
        engine.sprays[b_id] = Spray(b_id, 77, Role.HARD, Stage.OFFERED, now, now + 5.0)
        engine.on_predict(peer, Predict(PredictPhase.ACCEPT, 77, 16, b.bound_addr), now)
        a.flush()

        assert engine.predict_counters.sockets_opened == 6
        await wait_for(
            lambda: peer.reason is PathReason.PREDICTED, "the spray to make the pair direct", 10
        )
        kept = peer.via
        assert kept != 0
        assert engine.kept_sockets == {kept: b_id}
        assert len(a.sprays) == 1
        kept_addr = a.sprays.addr(kept)
        assert kept_addr is not None
        assert engine.spray_sockets_open == 1
        assert engine.predict_counters.sockets_closed == 5

        # a's frames to b now leave from the kept socket (b learns its address)
        sent_before = a.sprays.sent
        await pump.delivered(3, limit=10)
        assert a.sprays.sent >= sent_before + 3
        assert peer.path is PeerPath.DIRECT
        assert kept_addr in peer_of(b, a).candidates

        assert engine.remove_peer(b_id)
        a.flush()
        assert len(a.sprays) == 0
        assert engine.spray_sockets_open == 0
        assert kept_addr not in a.self_addrs
