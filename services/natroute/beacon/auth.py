"""Authenticated Discover: Ed25519 signatures over node ID and time (docs/decisions.md D15).

A signed Discover carries a 104-byte ``extra`` after the node ID::

    ed25519_pubkey (32) | unix_time_u64_be (8) | signature (64)

The signature, by that key, covers
``b"natroute-discover|" + node_id_u32_be + unix_time_u64_be``. The beacon
accepts it when ``unix_time`` is within ``max_skew`` seconds of its own wall
clock. Binding the key to the node ID, and the replay rule, are the core's
decisions; this module only signs and verifies.
"""

from __future__ import annotations

import struct
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from natroute._service.ed25519 import verify_signature

__all__ = [
    "DISCOVER_AUTH_CONTEXT",
    "DISCOVER_AUTH_LEN",
    "DiscoverAuthError",
    "SignedDiscover",
    "discover_auth_message",
    "sign_discover",
    "verify_discover",
]

#: Domain-separation prefix of the signed message.
DISCOVER_AUTH_CONTEXT: Final = b"natroute-discover|"
#: Length of a signed Discover's ``extra``.
DISCOVER_AUTH_LEN: Final = 32 + 8 + 64

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


class DiscoverAuthError(ValueError):
    """A signed Discover's trailer did not verify.

    Attributes:
        reason: ``"malformed"``, ``"stale"`` or ``"bad_signature"``.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"discover authentication failed: {reason}")


class SignedDiscover:
    """A verified trailer: the signer's raw public key and the signed time."""

    __slots__ = ("pubkey", "unix_time")

    def __init__(self, pubkey: bytes, unix_time: int) -> None:
        self.pubkey = pubkey
        self.unix_time = unix_time


def discover_auth_message(node_id: int, unix_time: int) -> bytes:
    """The exact bytes that are signed for ``node_id`` at ``unix_time``.

    Raises:
        struct.error: ``node_id`` is not a u32 or ``unix_time`` not a u64.
    """
    return DISCOVER_AUTH_CONTEXT + _U32.pack(node_id) + _U64.pack(unix_time)


def sign_discover(private_key: Ed25519PrivateKey, node_id: int, unix_time: int) -> bytes:
    """Build the 104-byte ``extra`` of a signed Discover.

    Args:
        private_key: the node's Ed25519 key.
        node_id: the node ID being registered (u32).
        unix_time: current Unix time in whole seconds (u64).

    Returns:
        ``pubkey | unix_time_u64_be | signature``, to pass as ``Discover.extra``.

    Raises:
        struct.error: ``node_id`` or ``unix_time`` out of range.
    """
    signature = private_key.sign(discover_auth_message(node_id, unix_time))
    pubkey = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return pubkey + _U64.pack(unix_time) + signature


def verify_discover(
    extra: bytes, node_id: int, wall_now: float, max_skew: float = 120.0
) -> SignedDiscover:
    """Check a signed Discover's trailer.

    Args:
        extra: the bytes after the node ID (must be exactly 104 long).
        node_id: the node ID from the Discover.
        wall_now: the beacon's Unix time.
        max_skew: largest accepted ``|unix_time - wall_now|`` in seconds.

    Returns:
        The verified key and time.

    Raises:
        DiscoverAuthError: wrong length (``malformed``), time outside the
            window (``stale``) or a signature that does not verify under the
            included key (``bad_signature``).
    """
    if len(extra) != DISCOVER_AUTH_LEN:
        raise DiscoverAuthError("malformed")
    pubkey = extra[:32]
    (unix_time,) = _U64.unpack_from(extra, 32)
    if abs(unix_time - wall_now) > max_skew:
        raise DiscoverAuthError("stale")
    if not verify_signature(pubkey, extra[40:], discover_auth_message(node_id, unix_time)):
        raise DiscoverAuthError("bad_signature")
    return SignedDiscover(pubkey, unix_time)
