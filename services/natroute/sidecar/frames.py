"""The plaintext inside an encrypted tunnel frame: one type byte, then a body.

::

    0x01 DATA       application payload
    0x02 KEEPALIVE  empty; keeps NAT mappings and the peer's receipt times fresh
    0x03 PROBE      nonce u64; sent straight to the peer's address, never relayed
    0x04 PROBE_ACK  nonce u64; the answer, sent straight back to the probe's source
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import Final

__all__ = ["InnerType", "decode_inner", "encode_probe"]

_NONCE = struct.Struct(">Q")
PROBE_LEN: Final = 1 + _NONCE.size


class InnerType(IntEnum):
    """Type byte of the plaintext."""

    DATA = 0x01
    KEEPALIVE = 0x02
    PROBE = 0x03
    PROBE_ACK = 0x04


def encode_probe(kind: InnerType, nonce: int) -> bytes:
    """A PROBE or PROBE_ACK plaintext."""
    return bytes([kind]) + _NONCE.pack(nonce)


def decode_inner(plaintext: bytes) -> tuple[InnerType, bytes] | None:
    """``(type, body)``, or None for an empty or unknown plaintext."""
    if not plaintext:
        return None
    try:
        kind = InnerType(plaintext[0])
    except ValueError:
        return None
    if kind in (InnerType.PROBE, InnerType.PROBE_ACK) and len(plaintext) != PROBE_LEN:
        return None
    return kind, plaintext[1:]
