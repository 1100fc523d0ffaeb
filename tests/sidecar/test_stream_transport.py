"""The stream transport on loopback: a sidecar that relays over a WebSocket and comes back.

UDP cannot be blocked on loopback without touching the host, so these tests
move the sidecar onto the stream the way the shell does when no beacon
answers over UDP (``use_stream``), and back (``use_udp``); the lab's
udp-blocked router covers the trigger itself (tests/e2e).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from natroute.sidecar.model import Transport
from natroute.sidecar.peers import Path as PeerPath
from natroute.sidecar.peers import PathReason
from natroute.sidecar.status import build_status
from natroute.sidecar.testing import running_sidecar, running_stack

from .helpers import Pump, node_id, peer_of, wait_for


@pytest.mark.asyncio
async def test_a_stream_node_delivers_both_ways_and_returns_to_udp(tmp_path: Path) -> None:
    async with (
        running_stack(tmp_path, http_listen="127.0.0.1:0", advertise_host="127.0.0.1") as stack,
        running_sidecar(stack.sidecar_settings("a")) as a,
        running_sidecar(stack.sidecar_settings("s")) as s,
    ):
        await s.use_stream("test: pretend UDP is blocked")
        assert s.transport is Transport.STREAM
        assert s.stream.open
        assert s.ready
        status = build_status(s)
        assert status.transport == "stream"
        assert status.stream.url is not None
        assert status.stream.url.endswith("/v1/relay")
        async with Pump(a, s) as to_s, Pump(s, a) as to_a:
            await to_s.delivered(5, limit=10)
            await to_a.delivered(5, limit=10)
        assert peer_of(s, a).path is PeerPath.RELAY
        assert peer_of(s, a).reason is PathReason.NO_UDP
        assert s.stream.client is not None
        assert s.stream.client.counters.sent > 0
        assert s.stream.client.counters.received > 0

        await s.use_udp("test: UDP is back")
        assert build_status(s).transport == "udp"
        assert not s.stream.open
        async with Pump(a, s) as to_s:
            await to_s.delivered(3, limit=10)
        await wait_for(
            lambda: peer_of(s, a).path is PeerPath.DIRECT, "s to go direct to a again", 10
        )
        assert node_id(a) in [p.node_id for p in s.engine.peers.values()]
