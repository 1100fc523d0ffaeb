"""The early responder: discovers answered before the core exists, then handed over (issue 15)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from natroute.beacon.early import EarlyResponder, early_reply, listen_from
from natroute.beacon.service import BeaconService
from natroute.beacon.testing import test_settings
from natroute.routing.wire import (
    Discover,
    DiscoverReply,
    RelayDeliver,
    decode_message,
    encode_message,
    encode_relay,
)

from .udpclient import UdpClient, wait_until


def test_early_reply_is_the_observed_endpoint() -> None:
    discover = encode_message(Discover(7))
    assert early_reply(discover, ("192.0.2.1", 9)) == encode_message(
        DiscoverReply(("192.0.2.1", 9))
    )
    mapped = early_reply(discover, ("::ffff:192.0.2.1", 9))
    assert mapped == encode_message(DiscoverReply(("192.0.2.1", 9)))
    assert len(early_reply(discover, ("2001:db8::1", 9)) or b"") == 20
    assert early_reply(encode_relay(1, 2, b"x"), ("192.0.2.1", 9)) is None
    assert early_reply(b"\x01\x00", ("192.0.2.1", 9)) is None
    assert early_reply(discover, ("not-an-ip", 9)) is None


def test_listen_from_reads_flags_over_env() -> None:
    assert listen_from([], {}) == "0.0.0.0:9001"
    assert listen_from([], {"NATROUTE_BEACON_LISTEN": "127.0.0.1:1"}) == "127.0.0.1:1"
    env = {"NATROUTE_BEACON_LISTEN": "127.0.0.1:1"}
    assert listen_from(["--listen", "127.0.0.1:2"], env) == "127.0.0.1:2"
    assert listen_from(["--listen=127.0.0.1:3", "--http-listen", "off"], env) == "127.0.0.1:3"
    assert listen_from(["--listen", "127.0.0.1:2", "--help"], env) is None
    assert listen_from(["--version"], {}) is None


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("b.toml", 'listen = "127.0.0.1:4"\n'),
        ("b.yaml", "listen: 127.0.0.1:4\n"),
        ("b.json", '{"listen": "127.0.0.1:4"}'),
    ],
)
def test_listen_from_reads_the_config_file_last(tmp_path: Path, name: str, text: str) -> None:
    config = tmp_path / name
    config.write_text(text)
    assert listen_from(["--config", str(config)], {}) == "127.0.0.1:4"
    assert listen_from([], {"NATROUTE_BEACON_CONFIG": str(config)}) == "127.0.0.1:4"
    env = {"NATROUTE_BEACON_LISTEN": "127.0.0.1:1"}
    assert listen_from([f"--config={config}"], env) == "127.0.0.1:1"


def test_listen_from_a_config_file_without_it(tmp_path: Path) -> None:
    empty = tmp_path / "b.toml"
    empty.write_text('log_level = "debug"\n')
    assert listen_from(["--config", str(empty)], {}) == "0.0.0.0:9001"
    broken = tmp_path / "c.toml"
    broken.write_text("listen = \n")
    assert listen_from(["--config", str(broken)], {}) is None  # the settings will say why
    assert listen_from(["--config", str(tmp_path / "missing.toml")], {}) is None
    assert listen_from(["--config", str(tmp_path / "b.ini")], {}) is None


def test_nothing_is_bound_for_bad_or_busy_addresses() -> None:
    assert EarlyResponder.start(["--listen", "nope"], {}) is None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        assert EarlyResponder.start(["--listen", busy], {}) is None


@pytest.mark.asyncio
async def test_answers_at_once_then_the_service_takes_over() -> None:
    early = EarlyResponder.start(["--listen", "127.0.0.1:0"], {}, cap=3)
    assert early is not None
    port = early.sock.getsockname()[1]
    beacon_addr = ("127.0.0.1", port)
    with UdpClient() as a, UdpClient() as b:
        # Before any setting is read: discovers are answered, relays kept.
        assert await a.register(1, beacon_addr) == a.addr
        assert await b.register(2, beacon_addr) == b.addr
        a.send(encode_relay(1, 2, b"PILSearly"), beacon_addr)
        a.send(encode_relay(1, 2, b"PILSover-the-cap"), beacon_addr)
        await wait_until(lambda: early.dropped == 1)
        settings = test_settings(listen="127.0.0.1:0")  # the address the responder bound
        async with BeaconService(settings, early=early) as beacon:
            assert beacon.udp_addr == beacon_addr
            # The backlog reached the core: both nodes recorded, the relay delivered.
            data, _ = await b.recv()
            assert decode_message(data) == RelayDeliver(1, b"PILSearly")
            assert beacon.snapshot().nodes == 2
            assert beacon.snapshot().discover_replies == 2  # counted, not sent again
            # No second DiscoverReply went out for the early discovers.
            await a.barrier(beacon.udp_addr)
            a.send(encode_relay(1, 2, b"PILSlater"), beacon.udp_addr)
            data, _ = await b.recv()
            assert decode_message(data) == RelayDeliver(1, b"PILSlater")


@pytest.mark.asyncio
async def test_a_responder_for_another_address_is_closed() -> None:
    early = EarlyResponder.start(["--listen", "127.0.0.2:0"], {})
    assert early is not None
    async with BeaconService(test_settings(), early=early) as beacon:
        assert beacon.udp_addr[0] == "127.0.0.1"
        assert early.sock.fileno() == -1  # closed: the settings name another address
