"""Ed25519 signature checks for every service, through libsodium (decision D44).

The registry checks a signature on every registration and heartbeat, the
beacon on every authenticated discover and stream hello. libsodium does it
in about half the CPU time of OpenSSL on the project's machine (55 against
105 µs), and it refuses what no honest signer produces: public keys and
``R`` values of small order, non-canonical encodings and ``S`` at or above
the group order. OpenSSL accepts a small-order key: with the identity point
as key, ``R`` the identity and ``S`` zero, every message verifies, so a node
registered under that key could be impersonated by anyone.
``tests/_service/test_ed25519.py`` holds the vectors.

Signing stays with :mod:`cryptography`; a signature made by any conforming
signer (cryptography, Go's ``crypto/ed25519``, libsodium) verifies here.
"""

from __future__ import annotations

from typing import Final

from nacl.bindings import crypto_sign_open
from nacl.exceptions import BadSignatureError

__all__ = ["KEY_LEN", "SIGNATURE_LEN", "verify_signature"]

#: Bytes of an Ed25519 public key.
KEY_LEN: Final = 32
#: Bytes of an Ed25519 signature (``R || S``).
SIGNATURE_LEN: Final = 64


def verify_signature(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """True when ``signature`` is ``public_key``'s signature of ``message``.

    Never raises: a key or signature of the wrong length, a weak key and a
    forged signature are all simply ``False``.
    """
    if len(public_key) != KEY_LEN or len(signature) != SIGNATURE_LEN:
        return False
    try:
        crypto_sign_open(signature + message, public_key)
    except BadSignatureError:
        return False
    return True
