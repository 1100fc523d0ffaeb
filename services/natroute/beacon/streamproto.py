"""The stream relay's hello: encode, decode, sign and verify (beacon README "Stream relay").

A node on a network that blocks UDP attaches to a beacon over a WebSocket
(``ws[s]://beacon:8001/v1/relay``). Before any relay frame the session opens
with three binary messages, all starting with ``b"NRS"`` (0x4E, outside the
beacon message space below 0x10, so they can never be mistaken for a frame)
and a version/type byte::

    beacon → node  challenge  "NRS" 01 | beacon_id u32 | challenge (32 random bytes)
    node → beacon  hello      "NRS" 02 | node_id u32 | ed25519 pubkey (32)
                                      | challenge (32, echoed) | signature (64)
    beacon → node  welcome    "NRS" 03 | node_id u32

The signature, by the node's Ed25519 key, covers
``b"natroute-stream-hello|" + challenge + node_id_u32_be + beacon_id_u32_be``:
the context separates it from every other signature natroute makes, the
fresh challenge makes it useless on any other session, and the beacon ID
makes it useless at any other beacon. The beacon then checks that the key is
the node's key in the registry (the shell's job; this module is pure).

After the welcome, every binary message is one beacon message exactly as on
UDP: ``05|src|dst|frame`` (and ``01|node_id`` keepalives) from the node,
``06|src|frame`` to it. A rejected hello closes the WebSocket with the close
code of its :class:`HelloReject` reason.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import Enum
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from natroute._service.ed25519 import verify_signature

__all__ = [
    "CHALLENGE_LEN",
    "CLOSE_IDLE",
    "CLOSE_MOVED",
    "CLOSE_NORMAL",
    "CLOSE_TRY_LATER",
    "HELLO_CONTEXT",
    "HELLO_LEN",
    "STREAM_PATH",
    "Challenge",
    "Hello",
    "HelloError",
    "HelloReject",
    "decode_challenge",
    "decode_hello",
    "decode_welcome",
    "encode_challenge",
    "encode_hello",
    "encode_welcome",
    "hello_message",
    "sign_hello",
    "verify_hello",
]

#: The HTTP path of the stream relay on the beacon's HTTP port.
STREAM_PATH: Final = "/v1/relay"
#: Domain-separation prefix of the signed hello.
HELLO_CONTEXT: Final = b"natroute-stream-hello|"
#: Bytes of a challenge.
CHALLENGE_LEN: Final = 32

_MAGIC: Final = b"NRS"
_CHALLENGE: Final = _MAGIC + b"\x01"
_HELLO: Final = _MAGIC + b"\x02"
_WELCOME: Final = _MAGIC + b"\x03"
_U32 = struct.Struct(">I")
_U32U32 = struct.Struct(">II")
#: Length of a challenge, a hello and a welcome message.
CHALLENGE_MSG_LEN: Final = 4 + 4 + CHALLENGE_LEN
HELLO_LEN: Final = 4 + 4 + 32 + CHALLENGE_LEN + 64
WELCOME_LEN: Final = 4 + 4

#: WebSocket close codes besides the hello rejections (RFC 6455 §7.4).
CLOSE_NORMAL: Final = 1000
CLOSE_TRY_LATER: Final = 1013
CLOSE_IDLE: Final = 4010
CLOSE_MOVED: Final = 4011


class HelloReject(Enum):
    """Why a hello was refused; each has its own WebSocket close code."""

    MALFORMED = "malformed"
    STALE_CHALLENGE = "stale_challenge"
    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_NODE = "unknown_node"
    WRONG_KEY = "wrong_key"
    REGISTRY_UNAVAILABLE = "registry_unavailable"
    TAKEOVER_REJECTED = "takeover_rejected"
    TABLE_FULL = "table_full"
    TIMEOUT = "timeout"
    BUSY = "busy"

    @property
    def close_code(self) -> int:
        """The WebSocket close code the beacon sends for this reason."""
        return _CLOSE_CODES[self]

    @classmethod
    def from_close_code(cls, code: int) -> HelloReject | None:
        """The reason a close code stands for, if it is a hello rejection."""
        return _BY_CODE.get(code)


_CLOSE_CODES: Final = {
    HelloReject.MALFORMED: 4000,
    HelloReject.STALE_CHALLENGE: 4001,
    HelloReject.BAD_SIGNATURE: 4002,
    HelloReject.UNKNOWN_NODE: 4003,
    HelloReject.WRONG_KEY: 4004,
    HelloReject.REGISTRY_UNAVAILABLE: 4005,
    HelloReject.TAKEOVER_REJECTED: 4006,
    HelloReject.TABLE_FULL: 4007,
    HelloReject.TIMEOUT: 4008,
    HelloReject.BUSY: CLOSE_TRY_LATER,
}
_BY_CODE: Final = {code: reason for reason, code in _CLOSE_CODES.items()}


class HelloError(ValueError):
    """A hello message that does not decode or verify.

    Attributes:
        reason: the :class:`HelloReject` reason.
    """

    def __init__(self, reason: HelloReject, detail: str = "") -> None:
        self.reason = reason
        super().__init__(
            f"stream hello refused: {reason.value}" + (f" ({detail})" if detail else "")
        )


@dataclass(frozen=True, slots=True)
class Challenge:
    """The beacon's opening message."""

    beacon_id: int
    challenge: bytes


@dataclass(frozen=True, slots=True)
class Hello:
    """A node's answer to a challenge (decoded, not yet verified)."""

    node_id: int
    pubkey: bytes
    challenge: bytes
    signature: bytes


def hello_message(challenge: bytes, node_id: int, beacon_id: int) -> bytes:
    """The exact bytes a hello signs.

    Raises:
        struct.error: an ID out of the u32 range.
    """
    return HELLO_CONTEXT + challenge + _U32U32.pack(node_id, beacon_id)


def encode_challenge(beacon_id: int, challenge: bytes) -> bytes:
    """``"NRS" 01 | beacon_id | challenge``.

    Raises:
        ValueError: a challenge that is not :data:`CHALLENGE_LEN` bytes.
        struct.error: a beacon ID out of the u32 range.
    """
    if len(challenge) != CHALLENGE_LEN:
        raise ValueError(f"challenge must be {CHALLENGE_LEN} bytes")
    return _CHALLENGE + _U32.pack(beacon_id) + challenge


def decode_challenge(data: bytes) -> Challenge:
    """Inverse of :func:`encode_challenge`.

    Raises:
        HelloError: (``malformed``) wrong type or length.
    """
    if len(data) != CHALLENGE_MSG_LEN or not data.startswith(_CHALLENGE):
        raise HelloError(HelloReject.MALFORMED, "not a challenge")
    (beacon_id,) = _U32.unpack_from(data, 4)
    return Challenge(beacon_id, bytes(data[8:]))


def encode_hello(hello: Hello) -> bytes:
    """``"NRS" 02 | node_id | pubkey | challenge | signature``.

    Raises:
        ValueError: a field of the wrong length.
        struct.error: a node ID out of the u32 range.
    """
    if (len(hello.pubkey), len(hello.challenge), len(hello.signature)) != (32, CHALLENGE_LEN, 64):
        raise ValueError("hello: pubkey, challenge and signature must be 32, 32 and 64 bytes")
    return _HELLO + _U32.pack(hello.node_id) + hello.pubkey + hello.challenge + hello.signature


def decode_hello(data: bytes) -> Hello:
    """Inverse of :func:`encode_hello`.

    Raises:
        HelloError: (``malformed``) wrong type or length, or node ID 0.
    """
    if len(data) != HELLO_LEN or not data.startswith(_HELLO):
        raise HelloError(HelloReject.MALFORMED, "not a hello")
    (node_id,) = _U32.unpack_from(data, 4)
    if node_id == 0:
        raise HelloError(HelloReject.MALFORMED, "node ID 0")
    return Hello(node_id, bytes(data[8:40]), bytes(data[40:72]), bytes(data[72:]))


def sign_hello(key: Ed25519PrivateKey, node_id: int, challenge: Challenge) -> bytes:
    """The encoded hello answering ``challenge`` for ``node_id``, signed by ``key``.

    Raises:
        struct.error: a node ID out of the u32 range.
    """
    signature = key.sign(hello_message(challenge.challenge, node_id, challenge.beacon_id))
    pubkey = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return encode_hello(Hello(node_id, pubkey, challenge.challenge, signature))


def verify_hello(hello: Hello, challenge: bytes, beacon_id: int) -> None:
    """Check that ``hello`` answers this session's ``challenge`` at this beacon.

    Only the signature is checked here; whether the key is the node's key is
    the registry's answer, checked by the caller.

    Raises:
        HelloError: ``stale_challenge`` when the hello echoes another
            challenge (a replay from another session), ``bad_signature`` when
            the signature does not verify under the included key.
    """
    if hello.challenge != challenge:
        raise HelloError(HelloReject.STALE_CHALLENGE)
    message = hello_message(challenge, hello.node_id, beacon_id)
    if not verify_signature(hello.pubkey, hello.signature, message):
        raise HelloError(HelloReject.BAD_SIGNATURE)


def encode_welcome(node_id: int) -> bytes:
    """``"NRS" 03 | node_id``: the session is attached.

    Raises:
        struct.error: a node ID out of the u32 range.
    """
    return _WELCOME + _U32.pack(node_id)


def decode_welcome(data: bytes) -> int:
    """The node ID of a welcome.

    Raises:
        HelloError: (``malformed``) not a welcome.
    """
    if len(data) != WELCOME_LEN or not data.startswith(_WELCOME):
        raise HelloError(HelloReject.MALFORMED, "not a welcome")
    node_id: int = _U32.unpack_from(data, 4)[0]
    return node_id
