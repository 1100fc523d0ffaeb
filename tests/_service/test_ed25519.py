"""The shared Ed25519 check: standard vectors pass, weak keys and malleated signatures fail."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from natroute._service.ed25519 import verify_signature

#: RFC 8032, section 7.1, tests 1-3: (public key, message, signature).
RFC8032 = [
    (
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
        "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
        "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    (
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac"
        "18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
]
#: The order of the Ed25519 base point.
L = 2**252 + 27742317777372353535851937790883648493
#: The identity point's encoding (y = 1): a key of small order.
IDENTITY = bytes([1]) + bytes(31)


@pytest.mark.parametrize(("key", "message", "signature"), RFC8032)
def test_rfc8032_vectors_verify_and_any_change_breaks_them(
    key: str, message: str, signature: str
) -> None:
    pub, msg, sig = bytes.fromhex(key), bytes.fromhex(message), bytes.fromhex(signature)
    assert verify_signature(pub, sig, msg)
    assert not verify_signature(pub, sig, msg + b"\x00")
    flipped = bytes([sig[0] ^ 1]) + sig[1:]
    assert not verify_signature(pub, flipped, msg)


def test_signatures_of_our_signer_verify() -> None:
    key = Ed25519PrivateKey.generate()
    pub = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    for message in (b"", b"natroute", bytes(range(256)) * 8):
        assert verify_signature(pub, key.sign(message), message)
    other = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert not verify_signature(other, key.sign(b"natroute"), b"natroute")


@pytest.mark.parametrize("message", [b"", b"register", b"any message at all"])
def test_the_identity_key_forgery_is_refused(message: bytes) -> None:
    # R = identity, S = 0 satisfies [S]B = R + [k]A for A = identity and every
    # message: OpenSSL accepts it (docs/decisions.md, D44).
    assert not verify_signature(IDENTITY, IDENTITY + bytes(32), message)


def test_a_malleated_s_is_refused() -> None:
    key = Ed25519PrivateKey.generate()
    pub = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    sig = key.sign(b"heartbeat")
    s = int.from_bytes(sig[32:], "little") + L  # the same point equation, S not reduced
    malleated = sig[:32] + s.to_bytes(32, "little")
    assert verify_signature(pub, sig, b"heartbeat")
    assert not verify_signature(pub, malleated, b"heartbeat")


@pytest.mark.parametrize(
    ("key_len", "sig_len"), [(0, 64), (31, 64), (33, 64), (32, 0), (32, 63), (32, 65)]
)
def test_wrong_lengths_are_false_not_errors(key_len: int, sig_len: int) -> None:
    assert not verify_signature(bytes(key_len), bytes(sig_len), b"m")
