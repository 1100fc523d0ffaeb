"""A real beacon process attacked over UDP from many loopback addresses (issue 10 items 5, 6).

Every test runs ``natroute-beacon`` as a child process on 127.0.0.1, keeps a
legitimate signed pair relaying through it (:class:`RelayStream`) and
attacks it from other 127/8 addresses. Each asserts what must hold: the
victims' state is unchanged, the legitimate traffic keeps flowing during and
after the attack, and the process's memory stays bounded. Bounded in count
(a few thousand datagrams) and time (seconds).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from natroute.routing.wire import Discover, PunchRequest, encode_message, encode_relay

from .beaconproc import RelayStream, UdpNode, beacon_process

pytestmark = pytest.mark.asyncio

_MIB = 1 << 20


async def _drain(node: UdpNode) -> list[bytes]:
    """Everything waiting on a node's socket (nothing more arrives within 0.2 s)."""
    out = []
    while (data := await node.recv(0.2)) is not None:
        out.append(data)
    return out


async def _assert_stream_recovers(stream: RelayStream) -> None:
    """After an attack, the legitimate pair still delivers (nearly) every frame."""
    start, sent = time.monotonic(), stream.sent
    await asyncio.sleep(1.0)
    expected = stream.sent - sent
    assert stream.delivered_since(start) >= 0.9 * expected > 0


@pytest.mark.timeout(60)
async def test_live_entries_are_not_taken_over_from_other_addresses() -> None:
    """Item 5: an unsigned and a signed entry survive takeover attempts with other keys."""
    async with beacon_process() as beacon, RelayStream(beacon.udp) as stream:
        with (
            UdpNode(11, signed=False) as upstream,  # an upstream daemon: never signs
            UdpNode(12) as signed_node,
            UdpNode(13) as peer,
        ):
            for node in (upstream, signed_node, peer):
                assert await node.register(beacon.udp)
            captured = signed_node.discover()  # a signed discover an attacker kept
            before = await beacon.status()
            attack_start = time.monotonic()
            attackers = [UdpNode(99, f"127.0.66.{i}") for i in range(1, 17)]
            try:
                for _ in range(5):
                    for attacker in attackers:
                        for victim_id in (upstream.node_id, signed_node.node_id):
                            attacker.send(attacker.discover(victim_id), beacon.udp)  # own key
                            attacker.send(encode_message(Discover(victim_id)), beacon.udp)
                            attacker.send(
                                encode_message(PunchRequest(victim_id, peer.node_id)), beacon.udp
                            )
                        attacker.send(captured, beacon.udp)
                    await asyncio.sleep(0.05)
                assert stream.delivered_since(attack_start) > 0
                # The victims' relays still reach them, and only them.
                for victim in (upstream, signed_node):
                    for i in range(20):
                        frame = encode_relay(peer.node_id, victim.node_id, bytes([i]))
                        peer.send(frame, beacon.udp)
                    got = [d for d in await _drain(victim) if d[:1] == b"\x06"]
                    assert len(got) == 20
                    assert await victim.register(beacon.udp)  # keepalives answered
                for attacker in attackers:
                    kinds = {d[:1] for d in await _drain(attacker)}
                    assert kinds <= {b"\x02"}  # discover replies only: no relay, no punch
            finally:
                for attacker in attackers:
                    attacker.sock.close()
            after = await beacon.status()
            assert after["nodes"] == before["nodes"]
            assert after["counters"]["registrations"] == before["counters"]["registrations"]
            rejected = after["drops"]["takeover_rejected"] - before["drops"]["takeover_rejected"]
            # 16 attackers x 5 rounds x (2 signed + 2 unsigned + 2 punch + 1 replay)
            assert rejected == 16 * 5 * 7
        await _assert_stream_recovers(stream)


@pytest.mark.timeout(90)
async def test_table_flood_from_many_sources_leaves_room_for_signed_nodes() -> None:
    """Item 6: quotas bound a signed flood; an unsigned flood yields to a signed node."""
    cap = 3000
    flags = ("--node-cap", str(cap), "--node-quota-host", "8", "--node-quota-net", "64")
    async with beacon_process(*flags) as beacon, RelayStream(beacon.udp) as stream:
        rss_before = beacon.rss()
        attack_start = time.monotonic()
        node_id = 1_000_000
        # Signed flood (attacker keys are free): 16 /24s x 16 addresses x 12 IDs = 3072.
        for net in range(16):
            for host in range(1, 17):
                with UdpNode(0, f"127.1.{net}.{host}") as attacker:
                    for _ in range(12):
                        node_id += 1
                        attacker.send(attacker.discover(node_id), beacon.udp)
            await asyncio.sleep(0.01)
        signed = await beacon.status()
        assert signed["drops"]["quota_exceeded"] > 0
        assert signed["signed_nodes"] <= 16 * 64 + 2  # the quotas held (+ the legitimate pair)
        # Unsigned flood from 64 more /24s: 64 x 8 addresses x 8 IDs = 4096.
        for net in range(64):
            for host in range(1, 9):
                with UdpNode(0, f"127.2.{net}.{host}", signed=False) as attacker:
                    for _ in range(8):
                        node_id += 1
                        attacker.send(attacker.discover(node_id), beacon.udp)
            await asyncio.sleep(0.01)
        full = await beacon.status()
        assert full["nodes"] == cap  # the table really is full
        assert full["drops"]["table_full"] > 0
        assert stream.delivered_since(attack_start) > 0
        # A new legitimate signed node still registers, gets its reply and its relays.
        with UdpNode(0x1E6171, "127.0.0.1") as newcomer:
            assert await newcomer.register(beacon.udp)
            stream.a.send(encode_relay(stream.a.node_id, newcomer.node_id, b"hi"), beacon.udp)
            assert any(d[:1] == b"\x06" for d in await _drain(newcomer))
        after = await beacon.status()
        assert after["counters"]["evicted_nodes"] >= 1
        assert after["nodes"] == cap
        assert beacon.rss() - rss_before < 64 * _MIB
        await _assert_stream_recovers(stream)
