"""The sync client on a real uvicorn (127.0.0.1, port 0), the BeaconLister
contract with ``fetch_beacon_list`` (docs/protocol.md, "Beacon lists"), and client-side
failures."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from natroute.registry.client import (
    AsyncRegistryClient,
    RegistryClient,
    RegistryClientError,
    RegistryNotFoundError,
)
from natroute.routing.errors import RegistryError, UsageError

from .conftest import TOKEN, FakeClock


@pytest.fixture
def client(served: str, clock: FakeClock) -> Iterator[RegistryClient]:
    """The sync client against a real uvicorn, on each backend."""
    with RegistryClient(served, token=TOKEN, clock=clock, timeout=5) as c:
        yield c


def test_sync_client_round_trip(
    client: RegistryClient, key: Ed25519PrivateKey, clock: FakeClock
) -> None:
    reg = client.register(key, endpoint="203.0.113.5:4000", lan_addrs=["10.0.0.5:4000"])
    assert client.register(key, endpoint="203.0.113.5:4000").node_id == reg.node_id
    beat = client.heartbeat(key, reg.node_id, endpoint="203.0.113.6:4000", relay_only=True)
    assert beat.relay_only
    client.register_beacon(5, "203.0.113.50:9001")
    peer = client.resolve(reg.node_id)
    assert peer.endpoint == "203.0.113.50:9001"
    assert peer.relay_only
    assert client.set_relay_only(reg.node_id, False).relay_only is False
    assert client.resolve(reg.node_id).endpoint == "203.0.113.6:4000"
    client.delete_node(reg.node_id)
    with pytest.raises(RegistryNotFoundError):
        client.resolve(reg.node_id)
    clock.advance(61)
    assert client.beacons() == []


def test_fetch_beacon_list_end_to_end(client: RegistryClient) -> None:
    # ``selection`` is written in parallel by another engineer; the direct
    # ``send`` checks below hold either way.
    selection = pytest.importorskip("natroute.routing.selection")
    for beacon_id, addr in [
        (3, "203.0.113.10:9001"),
        (1, "10.0.0.5:9001"),
        (2, "198.51.100.20:9001"),
    ]:
        client.register_beacon(beacon_id, addr)
    fetch: Any = selection.fetch_beacon_list
    # 10.0.0.5 is filtered as unreachable; the rest come sorted (D1).
    assert fetch(client) == ["198.51.100.20:9001", "203.0.113.10:9001"]


def test_send_beacon_list_shape(client: RegistryClient) -> None:
    assert client.send({"type": "beacon_list"}) == {"type": "beacon_list_ok", "beacons": []}
    client.register_beacon(9, "[2001:db8::9]:9001")
    client.register_beacon(4, "beacon.example.net:9001")
    assert client.send({"type": "beacon_list"}) == {
        "type": "beacon_list_ok",
        "beacons": [
            {"id": 4, "addr": "beacon.example.net:9001"},
            {"id": 9, "addr": "[2001:db8::9]:9001"},
        ],
    }


@pytest.mark.parametrize("msg", [{"type": "resolve", "node_id": 1}, {}, {"type": None}])
def test_send_unknown_message_raises(client: RegistryClient, msg: dict[str, Any]) -> None:
    with pytest.raises(RegistryClientError) as info:
        client.send(msg)
    assert info.value.code == "unsupported_message"


def test_fetch_beacon_list_wraps_failure() -> None:
    selection = pytest.importorskip("natroute.routing.selection")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on the port any more: a transport error, raised.
    with RegistryClient(f"http://127.0.0.1:{port}", timeout=2) as dead:
        with pytest.raises(RegistryClientError) as info:
            dead.send({"type": "beacon_list"})
        assert info.value.code == "transport"
        assert info.value.status is None
        with pytest.raises(RegistryError, match="beacon_list send"):
            selection.fetch_beacon_list(dead)


def _mock(status: int, content: bytes) -> httpx.MockTransport:
    return httpx.MockTransport(lambda request: httpx.Response(status, content=content))


@pytest.mark.parametrize(
    ("status", "content", "code"),
    [
        (200, b"not json", "bad_response"),
        (200, b'{"beacons": "nope"}', "bad_response"),
        (200, b'{"beacons": [{"id": 1}]}', "bad_response"),
        (502, b"<html>bad gateway</html>", "http_502"),
        (500, b'{"error": {"code": "internal", "message": "boom"}}', "internal"),
    ],
)
def test_bad_responses_raise_client_error(status: int, content: bytes, code: str) -> None:
    with (
        RegistryClient("http://r", transport=_mock(status, content)) as c,
        pytest.raises(RegistryClientError) as info,
    ):
        c.beacons()
    assert info.value.code == code
    assert not info.value.not_found


def test_resolve_response_with_bad_key_is_bad_response() -> None:
    body = b'{"node_id": 5, "ed25519_public_key": "AAAA", "last_seen": 1.0, "key_age_days": 0}'
    with (
        RegistryClient("http://r", transport=_mock(200, body)) as c,
        pytest.raises(RegistryClientError) as info,
    ):
        c.resolve(5)
    assert info.value.code == "bad_response"


def test_usage_errors(key: Ed25519PrivateKey) -> None:
    with RegistryClient("http://r", transport=_mock(200, b"{}")) as c:
        with pytest.raises(UsageError, match="operator token"):
            c.register_beacon(1, "203.0.113.1:1")
        with pytest.raises(UsageError):
            c.resolve(0)
        with pytest.raises(UsageError):
            c.heartbeat(key, 2**32)
        with pytest.raises(UsageError):
            c.register(key, x25519_public_key=b"short")


@pytest.mark.asyncio
async def test_async_client_transport_error_and_send() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async with AsyncRegistryClient("http://r", transport=httpx.MockTransport(refuse)) as c:
        with pytest.raises(RegistryClientError) as info:
            await c.send({"type": "beacon_list"})
    assert info.value.code == "transport"
