"""The stream relay on loopback: a real beacon, real WebSocket clients, a real registry (issue 12).

Covers the hello and each of its refusals (with its close code and counter),
relaying between a UDP node and a stream node both ways, the session cap,
the idle timeout, the bounded send queue of a slow reader, a node moving
back to UDP, TLS, and the stream URL sent to the registry.
"""

from __future__ import annotations

import asyncio
import datetime
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from natroute.beacon.auth import sign_discover
from natroute.beacon.service import BeaconService
from natroute.beacon.streamlimits import StreamLimits
from natroute.beacon.streamproto import (
    Challenge,
    HelloReject,
    decode_challenge,
    decode_welcome,
    sign_hello,
)
from natroute.beacon.testing import running_beacon
from natroute.routing.wire import (
    Discover,
    RelayDeliver,
    decode_message,
    encode_message,
    encode_relay,
)
from natroute.sidecar.stream import StreamRelayClient, StreamRelayError

from .registryfix import REGISTRY_TOKEN, REGISTRY_URL, InProcessRegistry, in_process_registry
from .udpclient import UdpClient, wait_until

pytestmark = pytest.mark.asyncio


@asynccontextmanager
async def beacon_with_registry(
    tmp_path: Path, **overrides: Any
) -> AsyncIterator[tuple[BeaconService, InProcessRegistry]]:
    async with (
        in_process_registry(tmp_path) as registry,
        running_beacon(
            http_listen="127.0.0.1:0",
            registry_url=REGISTRY_URL,
            registry_token=REGISTRY_TOKEN,
            http_client=registry.http,
            **overrides,
        ) as beacon,
    ):
        yield beacon, registry


def url(beacon: BeaconService) -> str:
    assert beacon.stream_url is not None
    return beacon.stream_url


class Inbox:
    """What a stream client's ``on_datagram`` received."""

    def __init__(self) -> None:
        self.items: list[bytes] = []

    def __call__(self, data: bytes) -> None:
        self.items.append(data)

    async def next(self) -> bytes:
        await wait_until(lambda: bool(self.items))
        return self.items.pop(0)


async def raw_session(beacon: BeaconService) -> tuple[ClientConnection, Challenge]:
    ws = await connect(url(beacon), compression=None)
    challenge = decode_challenge(await ws.recv())  # type: ignore[arg-type]
    return ws, challenge


async def close_code(ws: ClientConnection) -> int | None:
    with pytest.raises(ConnectionClosed) as closed:
        async with asyncio.timeout(5):
            await ws.recv()
    return closed.value.rcvd.code if closed.value.rcvd is not None else None


async def test_udp_node_and_stream_node_relay_both_ways(tmp_path: Path) -> None:
    async with beacon_with_registry(tmp_path) as (beacon, registry):
        key = Ed25519PrivateKey.generate()
        node_id = await registry.register_node(key)
        inbox = Inbox()
        client = StreamRelayClient(url(beacon), node_id, key, inbox, beacon_id=1)
        await client.connect()
        try:
            with UdpClient() as udp:
                await udp.register(55, beacon.udp_addr)
                udp.send(encode_relay(55, node_id, b"PILSdown"), beacon.udp_addr)
                assert decode_message(await inbox.next()) == RelayDeliver(55, b"PILSdown")
                assert client.send(encode_relay(node_id, 55, b"PILSup"))
                data, src = await udp.recv()
                assert decode_message(data) == RelayDeliver(node_id, b"PILSup")
                assert src == beacon.udp_addr
            snap = beacon.snapshot()
            assert snap.stream_sessions == 1
            assert snap.stream["attached"] == 1
            assert snap.relayed_packets == 2
            assert client.counters.sent == 1
            assert client.counters.received == 1
        finally:
            await client.close()
        assert client.closed
        await wait_until(lambda: beacon.snapshot().stream_sessions == 0)
        assert beacon.core.nodes.get(node_id, beacon.now()) is None


async def test_every_hello_refusal_has_its_close_code_and_counter(tmp_path: Path) -> None:
    async with beacon_with_registry(tmp_path, stream_hello_timeout=0.5) as (beacon, registry):
        key = Ed25519PrivateKey.generate()
        node_id = await registry.register_node(key)
        expected: dict[HelloReject, int] = {}

        async def refused(client: StreamRelayClient, reason: HelloReject) -> None:
            with pytest.raises(StreamRelayError) as caught:
                await client.connect()
            assert (caught.value.reason, caught.value.code) == (reason.value, reason.close_code)
            expected[reason] = expected.get(reason, 0) + 1

        inbox = Inbox()
        # Unknown node: not in the registry.
        await refused(
            StreamRelayClient(url(beacon), node_id + 1, key, inbox), HelloReject.UNKNOWN_NODE
        )
        # Wrong key: a registered node, another key.
        other = Ed25519PrivateKey.generate()
        await refused(StreamRelayClient(url(beacon), node_id, other, inbox), HelloReject.WRONG_KEY)
        # Bad signature, malformed, a replayed hello and a hello that never comes.
        ws, challenge = await raw_session(beacon)
        good = sign_hello(key, node_id, challenge)
        await ws.send(good[:-64] + bytes(64))
        assert await close_code(ws) == HelloReject.BAD_SIGNATURE.close_code
        ws, _ = await raw_session(beacon)
        await ws.send(good)  # signed for the previous session's challenge
        assert await close_code(ws) == HelloReject.STALE_CHALLENGE.close_code
        ws, _ = await raw_session(beacon)
        await ws.send(b"\x05" * 40)
        assert await close_code(ws) == HelloReject.MALFORMED.close_code
        ws, _ = await raw_session(beacon)
        assert await close_code(ws) == HelloReject.TIMEOUT.close_code
        for reason in (
            HelloReject.BAD_SIGNATURE,
            HelloReject.STALE_CHALLENGE,
            HelloReject.MALFORMED,
            HelloReject.TIMEOUT,
        ):
            expected[reason] = 1
        # A client expecting another beacon refuses to sign for this one.
        with pytest.raises(StreamRelayError, match="beacon_mismatch"):
            await StreamRelayClient(url(beacon), node_id, key, inbox, beacon_id=99).connect()
        counters = beacon.snapshot().stream
        for reason, count in expected.items():
            assert counters[f"rejected_{reason.value}"] == count
        assert "attached" not in counters
        # The right key still attaches.
        client = StreamRelayClient(url(beacon), node_id, key, inbox)
        await client.connect()
        await client.close()


async def test_registry_unavailable_fails_closed_unless_first_keys_are_trusted() -> None:
    key = Ed25519PrivateKey.generate()
    # A registry that refuses connections (nothing listens on port 1).
    async with running_beacon(
        http_listen="127.0.0.1:0", registry_url="http://127.0.0.1:1"
    ) as beacon:
        with pytest.raises(StreamRelayError) as caught:
            await StreamRelayClient(url(beacon), 5, key, Inbox()).connect()
        assert caught.value.reason == "registry_unavailable"
        assert caught.value.code == HelloReject.REGISTRY_UNAVAILABLE.close_code
    async with running_beacon(http_listen="127.0.0.1:0") as beacon:  # no registry at all
        with pytest.raises(StreamRelayError, match="registry_unavailable"):
            await StreamRelayClient(url(beacon), 5, key, Inbox()).connect()
    async with running_beacon(http_listen="127.0.0.1:0", stream_trust_first_key=True) as beacon:
        client = StreamRelayClient(url(beacon), 5, key, Inbox())
        await client.connect()
        # Trusting the first key still keeps the entry bound to it.
        with pytest.raises(StreamRelayError, match="takeover_rejected"):
            await StreamRelayClient(url(beacon), 5, Ed25519PrivateKey.generate(), Inbox()).connect()
        await client.close()


async def test_session_cap_and_idle_timeout() -> None:
    key = Ed25519PrivateKey.generate()
    async with running_beacon(
        http_listen="127.0.0.1:0",
        stream_trust_first_key=True,
        stream_max_sessions=1,
        stream_idle_timeout=0.3,
    ) as beacon:
        quiet = StreamRelayClient(url(beacon), 5, key, Inbox(), keepalive_interval=3600)
        await quiet.connect()
        with pytest.raises(StreamRelayError) as caught:
            await StreamRelayClient(url(beacon), 6, key, Inbox()).connect()
        assert (caught.value.reason, caught.value.code) == ("busy", 1013)
        # A session that sends nothing is closed by the beacon's idle sweep.
        async with asyncio.timeout(5):
            await quiet.wait_closed()
        assert "4010" in quiet.close_reason
        # A client that keeps alive stays.
        alive = StreamRelayClient(url(beacon), 5, key, Inbox(), keepalive_interval=0.05)
        await alive.connect()
        await asyncio.sleep(0.6)
        assert not alive.closed
        await alive.close()
        assert beacon.snapshot().stream["closed_idle"] >= 1


async def test_slow_reader_gets_a_bounded_queue_and_counted_drops() -> None:
    key = Ed25519PrivateKey.generate()
    async with running_beacon(
        http_listen="127.0.0.1:0", stream_trust_first_key=True, stream_send_queue=8, relay_rate=0
    ) as beacon:
        # A raw client that never reads: TCP buffers fill, then the session's queue.
        ws = await connect(url(beacon), compression=None, max_queue=1)
        challenge = decode_challenge(await ws.recv())  # type: ignore[arg-type]
        await ws.send(sign_hello(key, 5, challenge))
        assert decode_welcome(await ws.recv()) == 5  # type: ignore[arg-type]
        with UdpClient() as udp:
            await udp.register(55, beacon.udp_addr)
            frame = encode_relay(55, 5, b"P" * 1200)
            for _ in range(4000):  # ~4.8 MB towards a reader that takes none of it
                udp.send(frame, beacon.udp_addr)
                await asyncio.sleep(0)
            await udp.barrier(beacon.udp_addr)
        hub = beacon.hub
        assert hub is not None
        counters = beacon.snapshot().stream
        assert counters["dropped_queue_full"] > 0
        assert counters["sent"] + counters["dropped_queue_full"] <= 4000
        assert hub.queued <= 8
        ws.transport.abort()  # a reader this slow would not answer a closing handshake either
        await wait_until(lambda: beacon.snapshot().stream_sessions == 0)


async def test_node_moves_back_to_udp_and_the_session_is_closed(tmp_path: Path) -> None:
    async with beacon_with_registry(tmp_path) as (beacon, registry):
        key = Ed25519PrivateKey.generate()
        node_id = await registry.register_node(key)
        client = StreamRelayClient(url(beacon), node_id, key, Inbox(), keepalive_interval=0.05)
        await client.connect()
        with UdpClient() as udp:
            # Unsigned, or signed by another key: the stream keeps the entry.
            await udp.register(node_id, beacon.udp_addr)
            other = sign_discover(
                Ed25519PrivateKey.generate(),
                node_id,
                int(beacon.now() * 0 + __import__("time").time()),
            )
            await udp.register(node_id, beacon.udp_addr, other)
            assert beacon.snapshot().drops["takeover_rejected"] == 2
            assert not client.closed
            # The node's own key takes it back to UDP; the beacon closes the session.
            import time

            mine = encode_message(Discover(node_id, sign_discover(key, node_id, int(time.time()))))
            udp.send(mine, beacon.udp_addr)
            await udp.recv()
            entry = beacon.core.nodes.get(node_id, beacon.now())
            assert entry is not None
            assert entry.addr == udp.addr
            async with asyncio.timeout(5):
                await client.wait_closed()
            assert "4011" in client.close_reason


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_tls_serves_wss(tmp_path: Path) -> None:
    cert, tls_key = self_signed(tmp_path)
    key = Ed25519PrivateKey.generate()
    async with running_beacon(
        http_listen="127.0.0.1:0",
        advertise="localhost:9001",
        stream_trust_first_key=True,
        tls_cert=str(cert),
        tls_key=str(tls_key),
    ) as beacon:
        assert beacon.http_addr is not None
        assert beacon.stream_url == f"wss://localhost:{beacon.http_addr[1]}/v1/relay"
        context = ssl.create_default_context(cafile=str(cert))
        inbox = Inbox()
        client = StreamRelayClient(url(beacon), 5, key, inbox, ssl=context)
        await client.connect()
        with UdpClient() as udp:
            await udp.register(55, beacon.udp_addr)
            udp.send(encode_relay(55, 5, b"PILSsecret"), beacon.udp_addr)
            assert decode_message(await inbox.next()) == RelayDeliver(55, b"PILSsecret")
        await client.close()
        # A client that does not trust the certificate cannot connect.
        with pytest.raises(StreamRelayError, match="connect_failed"):
            await StreamRelayClient(url(beacon), 6, key, inbox).connect()


async def test_stream_url_is_registered_when_the_registry_takes_it(tmp_path: Path) -> None:
    async with beacon_with_registry(tmp_path, advertise="203.0.113.5:9001") as (beacon, registry):
        assert beacon.http_addr is not None
        assert beacon.stream_url == f"ws://203.0.113.5:{beacon.http_addr[1]}/v1/relay"
        await beacon.refresh_peers()
        listed = await registry.client.beacons()
        assert [(b.id, b.addr, b.stream_url) for b in listed] == [
            (1, "203.0.113.5:9001", beacon.stream_url)
        ]
        assert beacon.registry is not None
        assert beacon.registry.stream_url_accepted is True


async def test_no_stream_url_for_a_wildcard_address_and_none_when_off() -> None:
    async with running_beacon(http_listen="127.0.0.1:0", listen="0.0.0.0:0") as beacon:
        assert beacon.stream_url is None
        assert beacon.hub is not None  # still served; just not advertised
    async with running_beacon(http_listen="127.0.0.1:0", stream=False) as beacon:
        assert beacon.stream_url is None
        assert beacon.hub is None
    async with running_beacon(
        http_listen="127.0.0.1:0", advertise_stream="wss://relay.example/r"
    ) as b:
        assert b.stream_url == "wss://relay.example/r"


async def test_stream_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        StreamLimits(max_sessions=0)
    with pytest.raises(ValueError, match="positive"):
        StreamLimits(idle_timeout=0)
