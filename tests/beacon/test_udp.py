"""Real UDP tests of the beacon shell on 127.0.0.1 port 0 (docs/protocol.md, "Beacon rules")."""

from __future__ import annotations

import asyncio
import socket

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from natroute.beacon.auth import sign_discover
from natroute.beacon.config import BeaconConfig
from natroute.beacon.core import BeaconCore
from natroute.beacon.service import BeaconService
from natroute.beacon.stats import DropReason
from natroute.beacon.testing import running_beacon, test_settings
from natroute.beacon.udp import BatchedUdp, BeaconProtocol
from natroute.routing.wire import (
    Discover,
    PunchCommand,
    PunchRequest,
    RelayDeliver,
    decode_message,
    encode_message,
    encode_relay,
)

from .fakes import FakeClock
from .udpclient import UdpClient, wait_until


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.asyncio
@pytest.mark.parametrize("udp_batch", [True, False], ids=["batched", "asyncio"])
async def test_discover_reply_carries_observed_endpoint(udp_batch: bool) -> None:
    async with running_beacon(udp_batch=udp_batch) as beacon:
        with UdpClient() as a:
            assert await a.register(11, beacon.udp_addr) == a.addr
            entry = beacon.core.nodes.get(11, beacon.now())
            assert entry is not None
            assert entry.addr == a.addr


@pytest.mark.asyncio
@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback on this machine")
@pytest.mark.parametrize("udp_batch", [True, False], ids=["batched", "asyncio"])
async def test_ipv6_discover_and_relay(udp_batch: bool) -> None:
    async with running_beacon(listen="[::1]:0", udp_batch=udp_batch) as beacon:
        with UdpClient("::1") as a, UdpClient("::1") as b:
            a.send(encode_message(Discover(1)), beacon.udp_addr)
            data, _ = await a.recv()
            assert len(data) == 20
            # Hand-built expected bytes: 02 | iplen 16 | ::1 | port.
            expected = b"\x02\x10" + socket.inet_pton(socket.AF_INET6, "::1")
            assert data == expected + a.addr[1].to_bytes(2, "big")
            await b.register(2, beacon.udp_addr)
            a.send(encode_relay(1, 2, b"PILSv6"), beacon.udp_addr)
            data, src = await b.recv()
            assert decode_message(data) == RelayDeliver(1, b"PILSv6")
            assert src[1] == beacon.udp_addr[1]


@pytest.mark.asyncio
@pytest.mark.parametrize("udp_batch", [True, False], ids=["batched", "asyncio"])
async def test_punch_request_sends_commands_to_both(udp_batch: bool) -> None:
    async with running_beacon(udp_batch=udp_batch) as beacon:
        with UdpClient() as a, UdpClient() as b:
            await a.register(1, beacon.udp_addr)
            await b.register(2, beacon.udp_addr)
            a.send(encode_message(PunchRequest(1, 2)), beacon.udp_addr)
            data_a, _ = await a.recv()
            data_b, _ = await b.recv()
            assert decode_message(data_a) == PunchCommand(b.addr)
            assert decode_message(data_b) == PunchCommand(a.addr)
            assert beacon.snapshot().punches == 1


@pytest.mark.asyncio
@pytest.mark.parametrize("udp_batch", [True, False], ids=["batched", "asyncio"])
async def test_relay_is_delivered_with_sender_id(udp_batch: bool) -> None:
    async with running_beacon(udp_batch=udp_batch) as beacon:
        with UdpClient() as a, UdpClient() as b:
            await a.register(1, beacon.udp_addr)
            await b.register(2, beacon.udp_addr)
            a.send(encode_relay(1, 2, b"PILS" + bytes(1000)), beacon.udp_addr)
            data, src = await b.recv()
            assert data == b"\x06\x00\x00\x00\x01PILS" + bytes(1000)
            assert src == beacon.udp_addr
            snap = beacon.snapshot()
            assert (snap.relayed_packets, snap.relayed_bytes) == (1, 1004)


@pytest.mark.asyncio
async def test_expired_node_is_not_relayed_to() -> None:
    clock = FakeClock()
    async with running_beacon(clock=clock, node_ttl=60.0) as beacon:
        with UdpClient() as a, UdpClient() as b:
            await b.register(2, beacon.udp_addr)
            clock.advance(61)
            await a.register(1, beacon.udp_addr)
            a.send(encode_relay(1, 2, b"PILSx"), beacon.udp_addr)
            await b.barrier(beacon.udp_addr)
            assert beacon.snapshot().drops["relay_unknown_dst"] == 1
            beacon.core.sweep(clock())
            assert beacon.snapshot().nodes == 1
            assert beacon.snapshot().expired_nodes == 1


@pytest.mark.asyncio
@pytest.mark.parametrize("udp_batch", [True, False], ids=["batched", "asyncio"])
async def test_strict_mode_rejections(udp_batch: bool) -> None:
    async with running_beacon(udp_batch=udp_batch) as beacon:
        with UdpClient() as a, UdpClient() as b, UdpClient() as mallory:
            await a.register(1, beacon.udp_addr)
            await b.register(2, beacon.udp_addr)
            # Mallory claims to be node 1: the relay is dropped...
            mallory.send(encode_relay(1, 2, b"PILSevil"), beacon.udp_addr)
            await b.barrier(beacon.udp_addr)
            # ...and her discover for node 1 gets a reply but does not move the mapping.
            assert await mallory.register(1, beacon.udp_addr) == mallory.addr
            a.send(encode_relay(1, 2, b"PILSgood"), beacon.udp_addr)
            data, _ = await b.recv()
            assert data.endswith(b"PILSgood")
            drops = beacon.snapshot().drops
            assert drops["relay_sender_mismatch"] == 1
            assert drops["takeover_rejected"] == 1


@pytest.mark.asyncio
async def test_signed_discover_moves_node_to_new_address() -> None:
    key = Ed25519PrivateKey.generate()
    wall = FakeClock(1_800_000_000.0)
    async with running_beacon(wall_clock=wall) as beacon:
        with UdpClient() as old, UdpClient() as new, UdpClient() as b:
            await old.register(1, beacon.udp_addr, sign_discover(key, 1, int(wall())))
            await b.register(2, beacon.udp_addr)
            await new.register(1, beacon.udp_addr, sign_discover(key, 1, int(wall()) + 1))
            new.send(encode_relay(1, 2, b"PILSmoved"), beacon.udp_addr)
            data, _ = await b.recv()
            assert decode_message(data) == RelayDeliver(1, b"PILSmoved")
            assert beacon.snapshot().authenticated == 2


@pytest.mark.asyncio
async def test_non_strict_mode_behaves_like_upstream() -> None:
    async with running_beacon(strict=False) as beacon:
        with UdpClient() as a, UdpClient() as b:
            await b.register(2, beacon.udp_addr)
            a.send(encode_relay(0, 2, b"PILSanon"), beacon.udp_addr)
            data, _ = await b.recv()
            assert decode_message(data) == RelayDeliver(0, b"PILSanon")


@pytest.mark.asyncio
async def test_running_beacon_accepts_a_core_config() -> None:
    async with running_beacon(BeaconConfig(beacon_id=77, strict=False)) as beacon:
        assert beacon.snapshot().beacon_id == 77
        assert beacon.snapshot().strict is False
        assert beacon.http_addr is None


@pytest.mark.asyncio
@pytest.mark.parametrize("udp_batch", [True, False], ids=["batched", "asyncio"])
async def test_unsendable_destination_is_counted(udp_batch: bool) -> None:
    async with running_beacon(udp_batch=udp_batch) as beacon:
        beacon.core.set_static_peers([("::1", 9)])
        await beacon.gossip_now()
        assert beacon.snapshot().drops["send_failed"] == 1


_fuzz_datagrams = st.lists(
    st.one_of(
        st.binary(max_size=64),
        st.builds(lambda t, body: bytes([t]) + body, st.integers(0, 0x11), st.binary(max_size=40)),
    ),
    min_size=1,
    max_size=12,
)


async def _fuzz(datagrams: list[bytes]) -> None:
    async with running_beacon(strict=False) as beacon:
        with UdpClient() as a, UdpClient() as b, UdpClient() as witness:
            await b.register(2, beacon.udp_addr)
            for data in datagrams:  # zero-length datagrams included
                a.send(data, beacon.udp_addr)
            # The witness is never a destination, so its next datagram is its reply;
            # it arrives after every fuzzed datagram was handled.
            await witness.barrier(beacon.udp_addr)
            snap = beacon.snapshot()
            assert snap.received == len(datagrams) + 2
            assert beacon.ready


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_fuzz_datagrams)
def test_fuzzed_datagrams_never_break_the_shell(datagrams: list[bytes]) -> None:
    asyncio.run(_fuzz(datagrams))


def test_drop_reasons_are_bounded() -> None:
    assert len(DropReason) < 32


def test_protocol_counts_errors_and_sends_without_transport() -> None:
    clock = FakeClock()
    core = BeaconCore(BeaconConfig(beacon_id=3), wall_clock=clock)
    protocol = BeaconProtocol(core, clock)
    protocol.error_received(ConnectionRefusedError("port unreachable"))
    protocol.send([(b"\x02", ("192.0.2.1", 9))])
    assert core.snapshot().drops["send_failed"] == 2


@pytest.mark.asyncio
async def test_send_backlog_limit_drops_and_counts() -> None:
    async with running_beacon(send_buffer_limit=0, udp_batch=False) as beacon:
        assert isinstance(beacon.protocol, BeaconProtocol)
        # Filling the kernel buffer is not portable: a negative limit makes any backlog "full".
        beacon.protocol.send_buffer_limit = -1
        with UdpClient() as a:
            a.send(encode_message(Discover(0)), beacon.udp_addr)
            await wait_until(lambda: beacon.snapshot().drops["send_failed"] == 1)
        beacon.protocol.send_buffer_limit = 1 << 20
        beacon.protocol.send([(b"\x02", ("127.0.0.1", 0))])  # the kernel refuses port 0
        await wait_until(lambda: beacon.snapshot().drops["send_failed"] == 2)


@pytest.mark.asyncio
async def test_batched_shell_counts_what_it_cannot_send() -> None:
    async with running_beacon() as beacon:
        shell = beacon.protocol
        assert isinstance(shell, BatchedUdp)
        shell.send([(b"\x02", ("127.0.0.1", 0))])  # the kernel refuses port 0
        shell.send([(b"\x02", ("::1", 9))])  # an IPv6 destination on an IPv4 socket
        shell.send([(b"\x06", ("~stream", 1))])  # no stream hub: nowhere to go
        assert beacon.snapshot().drops["send_failed"] == 3
        shell.close()
        assert not beacon.ready
        shell.send([(b"\x02", ("127.0.0.1", 9))])
        assert beacon.snapshot().drops["send_failed"] == 4


@pytest.mark.asyncio
async def test_service_accessors_before_start() -> None:
    service = BeaconService(test_settings())
    with pytest.raises(RuntimeError):
        _ = service.core
    with pytest.raises(RuntimeError):
        _ = service.protocol
    assert not service.ready
    await service.stop()
