"""The plaintext inside an encrypted tunnel frame: one type byte, then a body.

::

    0x01 DATA           application payload
    0x02 KEEPALIVE      empty; keeps NAT mappings and the peer's receipt times fresh
    0x03 PROBE          nonce u64; a connectivity check (or a ping), answered on
                        the path it came by
    0x04 PROBE_ACK      nonce u64; the answer
    0x05 CALL_ME_MAYBE  count u8, then ``count`` candidates; "probe these now",
                        sent through the relay so both sides probe at once

A candidate is ``kind u8 | family u8 (4 or 6) | address (4 or 16 bytes) |
port u16``; kinds are 1 host, 2 server-reflexive, 3 peer-reflexive
(docs/protocol.md, "Candidates and checks"). Decoding never raises: anything
malformed decodes to None and the caller drops it.
"""

from __future__ import annotations

import ipaddress
import struct
from enum import IntEnum
from typing import Final

from natroute.routing.types import Addr

from .candidates import Candidate, CandidateKind

__all__ = [
    "MAX_WIRE_CANDIDATES",
    "PROBE_LEN",
    "InnerType",
    "decode_candidates",
    "decode_inner",
    "encode_call_me_maybe",
    "encode_probe",
    "probe_nonce",
]

_NONCE = struct.Struct(">Q")
_PORT = struct.Struct(">H")
PROBE_LEN: Final = 1 + _NONCE.size
#: Most candidates one CALL_ME_MAYBE carries (more are ignored on decode).
MAX_WIRE_CANDIDATES: Final = 16

_KIND_CODES: Final = {CandidateKind.HOST: 1, CandidateKind.SRFLX: 2, CandidateKind.PRFLX: 3}
_CODE_KINDS: Final = {code: kind for kind, code in _KIND_CODES.items()}


class InnerType(IntEnum):
    """Type byte of the plaintext."""

    DATA = 0x01
    KEEPALIVE = 0x02
    PROBE = 0x03
    PROBE_ACK = 0x04
    CALL_ME_MAYBE = 0x05


def encode_probe(kind: InnerType, nonce: int) -> bytes:
    """A PROBE or PROBE_ACK plaintext."""
    return bytes([kind]) + _NONCE.pack(nonce)


def probe_nonce(body: bytes) -> int:
    """The nonce of a decoded PROBE or PROBE_ACK body (exactly 8 bytes)."""
    return int(_NONCE.unpack(body)[0])


def encode_call_me_maybe(candidates: list[Candidate]) -> bytes:
    """A CALL_ME_MAYBE plaintext carrying up to :data:`MAX_WIRE_CANDIDATES` candidates."""
    parts = [bytes([InnerType.CALL_ME_MAYBE])]
    chosen = candidates[:MAX_WIRE_CANDIDATES]
    parts.append(bytes([len(chosen)]))
    for cand in chosen:
        ip = ipaddress.ip_address(cand.addr[0])
        parts.append(bytes([_KIND_CODES[cand.kind], ip.version]))
        parts.append(ip.packed)
        parts.append(_PORT.pack(cand.addr[1]))
    return b"".join(parts)


def decode_candidates(body: bytes) -> list[Candidate] | None:
    """The candidates of a CALL_ME_MAYBE body, or None when it is malformed."""
    if not body:
        return None
    count = body[0]
    if count > MAX_WIRE_CANDIDATES:
        return None
    out: list[Candidate] = []
    pos = 1
    for _ in range(count):
        if pos + 2 > len(body):
            return None
        kind = _CODE_KINDS.get(body[pos])
        family = body[pos + 1]
        size = {4: 4, 6: 16}.get(family)
        if kind is None or size is None or pos + 2 + size + 2 > len(body):
            return None
        raw = body[pos + 2 : pos + 2 + size]
        ip = ipaddress.ip_address(raw)
        (port,) = _PORT.unpack_from(body, pos + 2 + size)
        pos += 2 + size + 2
        if port == 0:
            return None
        addr: Addr = (str(ip), port)
        out.append(Candidate(addr, kind))
    if pos != len(body):
        return None
    return out


_INNER_OF: Final = {int(kind): kind for kind in InnerType}


def decode_inner(plaintext: bytes) -> tuple[InnerType, bytes] | None:
    """``(type, body)``, or None for an empty, unknown or malformed plaintext."""
    if not plaintext:
        return None
    kind = _INNER_OF.get(plaintext[0])
    if kind is None:
        return None
    if kind is InnerType.DATA:  # the busy case first
        return kind, plaintext[1:]
    if kind in (InnerType.PROBE, InnerType.PROBE_ACK) and len(plaintext) != PROBE_LEN:
        return None
    if kind is InnerType.CALL_ME_MAYBE and decode_candidates(plaintext[1:]) is None:
        return None
    return kind, plaintext[1:]
