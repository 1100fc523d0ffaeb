"""The sidecar's stream relay client against a real beacon on loopback (issue 12)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from natroute.beacon.service import BeaconService
from natroute.beacon.testing import running_beacon
from natroute.routing.wire import encode_relay
from natroute.sidecar.stream import StreamRelayClient, StreamRelayError

pytestmark = pytest.mark.asyncio

KEY = Ed25519PrivateKey.generate()


@pytest_asyncio.fixture
async def beacon() -> AsyncIterator[BeaconService]:
    async with running_beacon(http_listen="127.0.0.1:0", stream_trust_first_key=True) as service:
        yield service


def stream_url(beacon: BeaconService) -> str:
    assert beacon.stream_url is not None
    return beacon.stream_url


async def test_send_is_non_blocking_bounded_and_counted(beacon: BeaconService) -> None:
    client = StreamRelayClient(stream_url(beacon), 5, KEY, lambda _: None, max_queue=3)
    assert not client.send(b"\x05")  # before connect: closed
    assert client.counters.dropped_closed == 1
    await client.connect()
    frame = encode_relay(5, 6, b"x")
    # Nothing runs between these calls: the writer cannot drain, the queue fills.
    results = [client.send(frame) for _ in range(5)]
    assert results == [True, True, True, False, False]
    assert client.counters.dropped_queue_full == 2
    await asyncio.sleep(0.2)
    assert client.counters.sent == 3
    assert client.counters.bytes_sent == 3 * len(frame)
    await client.close()
    await client.close()  # idempotent
    assert client.closed
    assert client.close_reason == "closed by the client"
    assert not client.send(frame)
    with pytest.raises(RuntimeError):
        await client.connect()


async def test_beacon_going_away_ends_the_session() -> None:
    async with running_beacon(http_listen="127.0.0.1:0", stream_trust_first_key=True) as beacon:
        client = StreamRelayClient(stream_url(beacon), 5, KEY, lambda _: None)
        await client.connect()
    async with asyncio.timeout(15):
        await client.wait_closed()
    assert client.closed
    assert client.close_reason


async def test_a_failing_on_datagram_closes_the_session(beacon: BeaconService) -> None:
    def explode(data: bytes) -> None:
        raise ValueError("boom")

    client = StreamRelayClient(stream_url(beacon), 5, KEY, explode)
    await client.connect()
    other = StreamRelayClient(stream_url(beacon), 6, KEY, lambda _: None)
    await other.connect()
    other.send(encode_relay(6, 5, b"x"))
    async with asyncio.timeout(5):
        await client.wait_closed()
    assert "boom" in client.close_reason
    await other.close()


async def test_connect_failures_name_their_reason() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with pytest.raises(StreamRelayError) as refused:
        await StreamRelayClient(f"ws://127.0.0.1:{port}/v1/relay", 5, KEY, print).connect()
    assert refused.value.reason == "connect_failed"
    with pytest.raises(StreamRelayError, match="connect_failed"):
        await StreamRelayClient("http://not-a-ws-url", 5, KEY, print).connect()
    # A server that accepts TCP and never answers: the connect times out.
    accepted: list[asyncio.StreamWriter] = []
    server = await asyncio.start_server(lambda r, w: accepted.append(w), "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        client = StreamRelayClient(f"ws://127.0.0.1:{port}/", 5, KEY, print, connect_timeout=0.2)
        with pytest.raises(StreamRelayError) as timed_out:
            await client.connect()
        assert timed_out.value.reason == "timeout"
        await client.wait_closed()  # never opened: returns at once
        for writer in accepted:
            writer.close()
