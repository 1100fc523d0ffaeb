"""Two real beacons on loopback: gossip, forwarding, and no loop (docs/decisions.md D27)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from natroute.beacon.punch import PunchForward, decode_punch_forward, encode_punch_forward
from natroute.beacon.testing import running_beacon
from natroute.routing.addr import format_addr
from natroute.routing.errors import WireError
from natroute.routing.wire import (
    PunchCommand,
    PunchRequest,
    RelayDeliver,
    decode_message,
    encode_message,
    encode_relay,
)
from natroute.sidecar.stream import StreamRelayClient

from .fakes import FakeClock
from .udpclient import UdpClient, wait_until


@pytest.mark.asyncio
async def test_gossip_and_forwarded_relay() -> None:
    async with running_beacon(beacon_id=1) as one:
        # Static peers may be host names: "localhost" is resolved by the shell.
        peers = f"localhost:{one.udp_addr[1]}"
        async with running_beacon(beacon_id=2, peers=peers) as two:
            await one.set_static_peers([format_addr(two.udp_addr)])
            with UdpClient() as x, UdpClient() as y:
                await x.register(100, one.udp_addr)
                await y.register(200, two.udp_addr)
                await two.gossip_now()
                await wait_until(lambda: one.core.gossip.lookup(200, one.now()) is not None)
                x.send(encode_relay(100, 200, b"PILSacross"), one.udp_addr)
                data, src = await y.recv()
                assert decode_message(data) == RelayDeliver(100, b"PILSacross")
                assert src == two.udp_addr
                assert one.snapshot().forwarded_packets == 1
                assert two.snapshot().relayed_packets == 1
                assert one.snapshot().peers == (format_addr(two.udp_addr),)
                assert two.snapshot().syncs_sent == 1
                assert one.snapshot().syncs_received == 1


@pytest.mark.asyncio
async def test_a_new_node_is_known_to_the_peer_beacon_before_the_timed_round() -> None:
    """Early gossip: the first relays to a node new on the peer are forwarded, not dropped."""
    async with (  # the timed rounds stay an hour apart
        running_beacon(beacon_id=1, early_gossip_spacing=0.25) as one,
        running_beacon(beacon_id=2, early_gossip_spacing=0.25) as two,
    ):
        await one.set_static_peers([format_addr(two.udp_addr)])
        await two.set_static_peers([format_addr(one.udp_addr)])
        with UdpClient() as x, UdpClient() as y:
            await x.register(100, one.udp_addr)
            await y.register(200, two.udp_addr)
            await wait_until(lambda: one.core.gossip.lookup(200, one.now()) is not None)
            x.send(encode_relay(100, 200, b"PILSearly"), one.udp_addr)
            data, _ = await y.recv()
            assert decode_message(data) == RelayDeliver(100, b"PILSearly")
            assert two.snapshot().early_syncs >= 1
            assert one.snapshot().drops.get("relay_unknown_dst", 0) == 0


@pytest.mark.asyncio
async def test_udp_node_on_one_beacon_reaches_a_stream_node_on_another() -> None:
    """Issue 12: a stream-attached node is gossiped like any node; relays cross beacons."""
    key = Ed25519PrivateKey.generate()
    received: list[bytes] = []
    async with (
        running_beacon(beacon_id=1) as one,
        running_beacon(beacon_id=2, http_listen="127.0.0.1:0", stream_trust_first_key=True) as two,
    ):
        await one.set_static_peers([format_addr(two.udp_addr)])
        await two.set_static_peers([format_addr(one.udp_addr)])
        assert two.stream_url is not None
        stream = StreamRelayClient(two.stream_url, 200, key, received.append)
        await stream.connect()
        try:
            with UdpClient() as x:
                await x.register(100, one.udp_addr)
                await one.gossip_now()
                await two.gossip_now()
                await wait_until(lambda: one.core.gossip.lookup(200, one.now()) is not None)
                await wait_until(lambda: two.core.gossip.lookup(100, two.now()) is not None)
                # UDP node on one -> forwarded to two -> delivered over the stream.
                x.send(encode_relay(100, 200, b"PILSover"), one.udp_addr)
                await wait_until(lambda: bool(received))
                assert decode_message(received[0]) == RelayDeliver(100, b"PILSover")
                # Stream node on two -> forwarded to one -> delivered over UDP.
                assert stream.send(encode_relay(200, 100, b"PILSback"))
                data, src = await x.recv()
                assert decode_message(data) == RelayDeliver(200, b"PILSback")
                assert src == one.udp_addr
                assert one.snapshot().forwarded_packets == 1
                assert two.snapshot().forwarded_packets == 1
        finally:
            await stream.close()


@pytest.mark.asyncio
async def test_inconsistent_gossip_does_not_loop() -> None:
    clock = FakeClock()
    async with (
        running_beacon(beacon_id=1, clock=clock, node_ttl=60.0, gossip_ttl=10_000.0) as one,
        running_beacon(beacon_id=2, clock=clock, node_ttl=60.0, gossip_ttl=10_000.0) as two,
    ):
        await one.set_static_peers([format_addr(two.udp_addr)])
        await two.set_static_peers([format_addr(one.udp_addr)])
        with UdpClient() as z, UdpClient() as x:
            # Node 300 registers at both beacons in turn; each gossips it to the other.
            await z.register(300, two.udp_addr)
            await two.gossip_now()
            await wait_until(lambda: one.core.gossip.lookup(300, clock()) is not None)
            await z.register(300, one.udp_addr)
            await one.gossip_now()
            await wait_until(lambda: two.core.gossip.lookup(300, clock()) is not None)
            # Both registrations expire: one believes 300 is at two, and two at one.
            clock.advance(61)
            assert one.core.gossip.lookup(300, clock()) == two.udp_addr
            assert two.core.gossip.lookup(300, clock()) == one.udp_addr
            await x.register(100, one.udp_addr)
            x.send(encode_relay(100, 300, b"PILSloop"), one.udp_addr)
            await wait_until(lambda: two.snapshot().drops["relay_hop_limit"] == 1)
            # Prove nothing more is in flight: a frame round trip through both beacons.
            await x.barrier(one.udp_addr)
            await x.barrier(two.udp_addr)
            assert one.snapshot().forwarded_packets == 1
            assert two.snapshot().forwarded_packets == 0
            assert one.snapshot().drops["relay_hop_limit"] == 0


@pytest.mark.asyncio
async def test_sync_from_non_peer_is_ignored() -> None:
    async with running_beacon(beacon_id=1) as one, running_beacon(beacon_id=2) as two:
        await two.set_static_peers([format_addr(one.udp_addr)])  # one does not list two
        with UdpClient() as y:
            await y.register(200, two.udp_addr)
        await two.gossip_now()
        await wait_until(lambda: one.snapshot().drops["sync_unknown_peer"] == 1)
        assert one.snapshot().gossip_entries == 0


@pytest.mark.asyncio
async def test_a_punch_for_a_node_on_the_peer_beacon_is_forwarded() -> None:
    """Each side hears a punch command from its own beacon, towards the other side."""
    async with running_beacon(beacon_id=1) as one, running_beacon(beacon_id=2) as two:
        await one.set_static_peers([format_addr(two.udp_addr)])
        await two.set_static_peers([format_addr(one.udp_addr)])
        with UdpClient() as r, UdpClient() as t, UdpClient() as stranger:
            await r.register(100, one.udp_addr)
            await t.register(200, two.udp_addr)
            await two.gossip_now()
            await wait_until(lambda: one.core.gossip.lookup(200, one.now()) is not None)

            r.send(encode_message(PunchRequest(100, 200)), one.udp_addr)

            to_t, from_two = await t.recv()
            assert decode_message(to_t) == PunchCommand(r.addr)
            assert from_two == two.udp_addr  # t's own beacon tells it
            to_r, from_one = await r.recv()
            assert decode_message(to_r) == PunchCommand(t.addr)
            assert from_one == one.udp_addr
            assert one.snapshot().punches_forwarded == 1
            assert two.snapshot().punches == 1

            # forwards from anybody but a peer beacon are dropped
            forged = encode_punch_forward(PunchForward(False, 100, 200, stranger.addr))
            stranger.send(forged, two.udp_addr)
            stranger.send(b"\x08\x00", two.udp_addr)
            await wait_until(lambda: two.snapshot().drops["forward_unknown_peer"] >= 2)
            assert two.snapshot().punches == 1


def test_punch_forward_codec() -> None:
    for msg in (
        PunchForward(False, 1, 2, ("198.51.100.7", 4000)),
        PunchForward(True, 0xFFFFFFFF, 9, ("2001:db8::1", 1)),
    ):
        wire = encode_punch_forward(msg)
        assert decode_punch_forward(wire) == msg
        for cut in range(len(wire)):
            with pytest.raises(WireError):
                decode_punch_forward(wire[:cut])
        with pytest.raises(WireError):
            decode_punch_forward(wire + b"x")
    with pytest.raises(WireError):
        decode_punch_forward(encode_punch_forward(PunchForward(False, 0, 2, ("192.0.2.1", 1))))
    with pytest.raises(WireError):
        decode_punch_forward(b"\x07" + bytes(20))
