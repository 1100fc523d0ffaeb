"""Pure helpers: the signing scheme, address validators."""

from __future__ import annotations

import ipaddress

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from natroute.registry.models import (
    address_problem,
    check_ip_port,
    check_name_or_ip_port,
    check_stream_url,
)
from natroute.registry.signing import (
    ACTION_HEARTBEAT,
    ACTION_REGISTER,
    b64decode_exact,
    b64encode,
    public_key_bytes,
    sign,
    signing_payload,
    verify,
)


def test_signing_payload_is_canonical_and_action_bound() -> None:
    a = signing_payload(ACTION_REGISTER, {"b": 1, "a": [None, True], "é": "x"})
    assert a == b'natroute-registry/v1 register\n{"a":[null,true],"b":1,"\\u00e9":"x"}'
    key = Ed25519PrivateKey.generate()
    fields = {"timestamp_us": 5}
    signature = b64decode_exact(sign(key, ACTION_REGISTER, fields), 64)
    assert verify(public_key_bytes(key), signature, ACTION_REGISTER, fields)
    assert not verify(public_key_bytes(key), signature, ACTION_HEARTBEAT, fields)
    assert not verify(public_key_bytes(key), signature, ACTION_REGISTER, {"timestamp_us": 6})
    assert not verify(b"\x00" * 31, signature, ACTION_REGISTER, fields)


@pytest.mark.parametrize("text", ["AAAA", "A" * 43, "A" * 43 + "=" * 2, "é" * 44, " " + "A" * 43])
def test_b64decode_exact_refuses(text: str) -> None:
    with pytest.raises(ValueError, match=r"base64|bytes"):
        b64decode_exact(text, 32)


def test_b64decode_exact_round_trip() -> None:
    assert b64decode_exact(b64encode(bytes(range(32))), 32) == bytes(range(32))


@pytest.mark.parametrize("text", ["1.2.3.4:1", "[2001:db8::1]:65535", "[::ffff:1.2.3.4]:80"])
def test_ip_port_accepts(text: str) -> None:
    assert check_ip_port(text) == text


@pytest.mark.parametrize(
    "text",
    ["1.2.3.4", "1.2.3.4:0", "[1.2.3.4]:1", "::1:80", "a.b:1", ":1", "1.2.3.4:+1", "1.2.3.4:٣"],
)
def test_ip_port_refuses(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each refusal has its own message
        check_ip_port(text)


@pytest.mark.parametrize(
    "text", ["beacon:9001", "b-1.example.net.:1", "203.0.113.1:9001", "[::1]:1"]
)
def test_name_or_ip_port_accepts(text: str) -> None:
    assert check_name_or_ip_port(text) == text


@pytest.mark.parametrize(
    "text", ["-bad.example:1", "a..b:1", "under_score:1", "[name]:1", "x" * 64 + ":1", "h:99999"]
)
def test_name_or_ip_port_refuses(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        check_name_or_ip_port(text)


@pytest.mark.parametrize(
    "text",
    [
        "198.51.100.7:4000",
        "10.1.2.3:1",
        "172.16.0.1:1",
        "192.168.1.1:1",
        "100.64.0.1:1",
        "198.18.100.2:4000",
        "198.19.255.254:4000",
        "[fd00::5]:4000",
        "[2001:db8::1]:4000",
        "255.255.255.254:1",
        "1.0.0.0:1",
        "[::ffff:198.51.100.7]:1",
    ],
)
def test_unicast_addresses_are_accepted(text: str) -> None:
    assert check_ip_port(text) == text
    host = text.rsplit(":", 1)[0].strip("[]")
    assert address_problem(ipaddress.ip_address(host), allow_local=False) is None


@pytest.mark.parametrize(
    ("text", "word"),
    [
        ("0.0.0.0:4000", "unspecified"),
        ("0.1.2.3:4000", "unspecified"),
        ("[::]:4000", "unspecified"),
        ("[::ffff:0.0.0.0]:4000", "unspecified"),
        ("255.255.255.255:4000", "broadcast"),
        ("[::ffff:255.255.255.255]:4000", "broadcast"),
        ("224.0.0.251:5353", "multicast"),
        ("239.255.255.250:1900", "multicast"),
        ("[ff02::1]:4000", "multicast"),
        ("[ff0e::1]:4000", "multicast"),
        ("[::ffff:224.0.0.1]:4000", "multicast"),
    ],
)
def test_never_reachable_addresses_are_refused(text: str, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        check_ip_port(text)


@pytest.mark.parametrize(
    ("host", "word"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("169.254.10.1", "link-local"),
        ("fe80::1", "link-local"),
        ("::ffff:169.254.0.1", "link-local"),
    ],
)
def test_local_addresses_depend_on_the_setting(host: str, word: str) -> None:
    ip = ipaddress.ip_address(host)
    problem = address_problem(ip, allow_local=False)
    assert problem is not None
    assert word in problem
    assert "NATROUTE_REGISTRY_ALLOW_LOCAL_ENDPOINTS" in problem
    assert address_problem(ip, allow_local=True) is None


@pytest.mark.parametrize(
    "url",
    [
        "ws://beacon.example.net:8001/v1/relay",
        "wss://beacon.example.net/relay?x=1",
        "ws://198.18.100.11:8001",
        "wss://[2001:db8::1]:443/relay",
    ],
)
def test_stream_url_accepts(url: str) -> None:
    assert check_stream_url(url) == url


@pytest.mark.parametrize(
    "url",
    [
        "http://beacon.example.net/relay",
        "ws://",
        "ws://:8001/x",
        "ws://bad_host:1/",
        "ws://user:pw@beacon.example.net/",
        "ws://beacon.example.net/#frag",
        "ws://beacon.example.net:0/",
        "ws://beacon.example.net:99999/",
        "ws://beacon.example.net/a b",
        "ws://beacon.example.net/\x00",
        "ws://[example.com]/",
        "beacon.example.net:8001",
    ],
)
def test_stream_url_refuses(url: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each refusal has its own message
        check_stream_url(url)
