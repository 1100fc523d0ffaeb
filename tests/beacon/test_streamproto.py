"""The stream relay hello codec: golden bytes, signatures, every refusal (issue 12)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given
from hypothesis import strategies as st

from natroute.beacon.streamproto import (
    CHALLENGE_LEN,
    HELLO_LEN,
    Challenge,
    Hello,
    HelloError,
    HelloReject,
    decode_challenge,
    decode_hello,
    decode_welcome,
    encode_challenge,
    encode_hello,
    encode_welcome,
    hello_message,
    sign_hello,
    verify_hello,
)

CHALLENGE = bytes(range(32))
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(100, 132)))
#: The encoding of the identity point, a public key of small order.
IDENTITY = bytes([1]) + bytes(31)
PUB = KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def test_golden_messages() -> None:
    assert encode_challenge(0x01020304, CHALLENGE) == b"NRS\x01\x01\x02\x03\x04" + CHALLENGE
    assert decode_challenge(encode_challenge(7, CHALLENGE)) == Challenge(7, CHALLENGE)
    assert encode_welcome(0xDEADBEEF) == b"NRS\x03\xde\xad\xbe\xef"
    assert decode_welcome(encode_welcome(5)) == 5
    hello = Hello(0x0A0B0C0D, PUB, CHALLENGE, bytes(64))
    data = encode_hello(hello)
    assert data == b"NRS\x02\x0a\x0b\x0c\x0d" + PUB + CHALLENGE + bytes(64)
    assert len(data) == HELLO_LEN == 136
    assert decode_hello(data) == hello
    assert hello_message(CHALLENGE, 9, 7) == (
        b"natroute-stream-hello|" + CHALLENGE + b"\x00\x00\x00\x09\x00\x00\x00\x07"
    )


def test_signed_hello_verifies_for_its_challenge_and_beacon_only() -> None:
    hello = decode_hello(sign_hello(KEY, 42, Challenge(7, CHALLENGE)))
    assert (hello.node_id, hello.pubkey, hello.challenge) == (42, PUB, CHALLENGE)
    KEY.public_key().verify(hello.signature, hello_message(CHALLENGE, 42, 7))
    verify_hello(hello, CHALLENGE, 7)
    with pytest.raises(HelloError) as other_beacon:
        verify_hello(hello, CHALLENGE, 8)
    assert other_beacon.value.reason is HelloReject.BAD_SIGNATURE


def test_replayed_hello_is_a_stale_challenge() -> None:
    """A hello captured on one session, played on another (another challenge)."""
    hello = decode_hello(sign_hello(KEY, 42, Challenge(7, CHALLENGE)))
    with pytest.raises(HelloError) as caught:
        verify_hello(hello, bytes(32), 7)
    assert caught.value.reason is HelloReject.STALE_CHALLENGE


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda h: Hello(h.node_id + 1, h.pubkey, h.challenge, h.signature), id="node"),
        pytest.param(lambda h: Hello(h.node_id, h.pubkey, h.challenge, bytes(64)), id="zero-sig"),
        pytest.param(
            lambda h: Hello(h.node_id, bytes(32), h.challenge, h.signature), id="other-key"
        ),
        pytest.param(lambda h: Hello(h.node_id, b"\xff" * 32, h.challenge, h.signature), id="junk"),
        pytest.param(  # a small-order key: R = identity, S = 0 "verifies" any message (D44)
            lambda h: Hello(h.node_id, IDENTITY, h.challenge, IDENTITY + bytes(32)),
            id="identity-key-forgery",
        ),
    ],
)
def test_bad_signatures(mutate: Callable[[Hello], Hello]) -> None:
    hello = decode_hello(sign_hello(KEY, 42, Challenge(7, CHALLENGE)))
    with pytest.raises(HelloError) as caught:
        verify_hello(mutate(hello), CHALLENGE, 7)
    assert caught.value.reason is HelloReject.BAD_SIGNATURE


def test_truncated_oversized_and_foreign_messages_are_malformed() -> None:
    hello = sign_hello(KEY, 42, Challenge(7, CHALLENGE))
    challenge = encode_challenge(7, CHALLENGE)
    welcome = encode_welcome(42)
    for decode, good in ((decode_hello, hello), (decode_challenge, challenge)):
        for bad in (good[:n] for n in range(len(good))):
            with pytest.raises(HelloError) as caught:
                decode(bad)
            assert caught.value.reason is HelloReject.MALFORMED
        for bad in (good + b"x", b"NRS\x09" + good[4:], b"\x05" + good[1:]):
            with pytest.raises(HelloError):
                decode(bad)
    for bad in (welcome[:-1], welcome + b"\x00", hello):
        with pytest.raises(HelloError):
            decode_welcome(bad)
    with pytest.raises(HelloError, match="node ID 0"):
        decode_hello(hello[:4] + bytes(4) + hello[8:])


def test_encoders_refuse_wrong_lengths() -> None:
    with pytest.raises(ValueError, match="challenge"):
        encode_challenge(1, b"short")
    with pytest.raises(ValueError, match="hello"):
        encode_hello(Hello(1, b"k", CHALLENGE, bytes(64)))


def test_close_codes_are_distinct_and_map_back() -> None:
    codes = {reason.close_code for reason in HelloReject}
    assert len(codes) == len(HelloReject)
    for reason in HelloReject:
        assert HelloReject.from_close_code(reason.close_code) is reason
    assert HelloReject.from_close_code(1000) is None
    assert HelloReject.BUSY.close_code == 1013
    assert all(4000 <= r.close_code < 5000 for r in HelloReject if r is not HelloReject.BUSY)


@given(st.binary(max_size=2 * HELLO_LEN))
def test_any_bytes_decode_or_raise_hello_error(data: bytes) -> None:
    for decode in (decode_hello, decode_challenge, decode_welcome):
        try:
            decode(data)
        except HelloError as exc:
            reason = exc.reason
        else:
            reason = HelloReject.MALFORMED
        assert reason is HelloReject.MALFORMED


@given(st.integers(1, 2**32 - 1), st.integers(1, 2**32 - 1), st.binary(min_size=32, max_size=32))
def test_roundtrip(node_id: int, beacon_id: int, challenge: bytes) -> None:
    assert len(challenge) == CHALLENGE_LEN
    hello = decode_hello(
        sign_hello(KEY, node_id, decode_challenge(encode_challenge(beacon_id, challenge)))
    )
    verify_hello(hello, challenge, beacon_id)
