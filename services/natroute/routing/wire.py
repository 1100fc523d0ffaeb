"""Codec for the beacon protocol: one verb pair, ``encode_*``/``decode_*``.

The messages: docs/protocol.md, "Wire format (beacon messages)".

Messages are frozen dataclasses. ``decode_message`` turns one datagram into a
message or raises :class:`WireError`; it never raises anything else, whatever
the bytes. ``encode_message`` is its inverse for every valid message.

Layouts (all integers big-endian, node IDs u32, ports u16)::

    0x01 Discover        01 | node_id | [extra]
    0x02 DiscoverReply   02 | iplen | ip | port
    0x03 PunchRequest    03 | requester | target | [extra]
    0x04 PunchCommand    04 | iplen | ip | port
    0x05 Relay           05 | src | dst | payload
    0x06 RelayDeliver    06 | src | payload
    0x07 Sync            07 | beacon_id | count | node_id * count

``iplen`` is 4 or 16. Encoders emit the 4-byte form whenever the address has
an IPv4 form (plain or IPv4-mapped); decoders return mapped addresses as
plain IPv4 text, so they compare equal to the beacon's IPv4 address.

Demultiplexing on a node's socket: a first byte below 0x10 is a beacon
message; tunnel frames start with ``b"P"`` (0x50) and never collide.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Final, TypeAlias

from .errors import WireError
from .types import Addr

__all__ = [
    "BEACON_MSG_LIMIT",
    "MAX_SYNC_NODES",
    "MSG_DISCOVER",
    "MSG_DISCOVER_REPLY",
    "MSG_PUNCH_COMMAND",
    "MSG_PUNCH_REQUEST",
    "MSG_RELAY",
    "MSG_RELAY_DELIVER",
    "MSG_SYNC",
    "RELAY_HEADER_LEN",
    "BeaconMessage",
    "Discover",
    "DiscoverReply",
    "PunchCommand",
    "PunchRequest",
    "Relay",
    "RelayDeliver",
    "Sync",
    "decode_endpoint",
    "decode_message",
    "encode_endpoint",
    "encode_message",
    "encode_relay",
    "is_beacon_message",
]

MSG_DISCOVER: Final = 0x01
MSG_DISCOVER_REPLY: Final = 0x02
MSG_PUNCH_REQUEST: Final = 0x03
MSG_PUNCH_COMMAND: Final = 0x04
MSG_RELAY: Final = 0x05
MSG_RELAY_DELIVER: Final = 0x06
MSG_SYNC: Final = 0x07

#: First bytes below this are beacon messages.
BEACON_MSG_LIMIT: Final = 0x10
#: Bytes in front of the payload of a Relay message.
RELAY_HEADER_LEN: Final = 9
#: Sync carries at most this many node IDs (u16 count).
MAX_SYNC_NODES: Final = 0xFFFF

_U32 = struct.Struct(">I")
_U32U32 = struct.Struct(">II")
_SYNC_HEAD = struct.Struct(">IH")
_PORT = struct.Struct(">H")


def _check_u32(value: int, what: str) -> None:
    if not 0 <= value <= 0xFFFFFFFF:
        raise WireError(f"{what} out of range: {value}")


@dataclass(frozen=True, slots=True)
class Discover:
    """Register/keepalive/STUN probe: "record my node ID at my source address".

    ``extra`` carries bytes after the node ID, ignored by plain beacons.
    """

    node_id: int
    extra: bytes = b""


@dataclass(frozen=True, slots=True)
class DiscoverReply:
    """The UDP endpoint the beacon observed for the sender of a Discover."""

    addr: Addr


@dataclass(frozen=True, slots=True)
class PunchRequest:
    """Ask the beacon to send punch commands to ``requester`` and ``target``."""

    requester: int
    target: int
    extra: bytes = b""


@dataclass(frozen=True, slots=True)
class PunchCommand:
    """Beacon → node: send punch datagrams to ``addr``."""

    addr: Addr


@dataclass(frozen=True, slots=True)
class Relay:
    """Node → beacon (and beacon → beacon): deliver ``payload`` to ``dst``."""

    src: int
    dst: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class RelayDeliver:
    """Beacon → node: ``payload`` relayed from ``src`` (as the sender claimed)."""

    src: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Sync:
    """Beacon → beacon gossip: the node IDs registered at ``beacon_id``."""

    beacon_id: int
    node_ids: tuple[int, ...]


BeaconMessage: TypeAlias = (
    Discover | DiscoverReply | PunchRequest | PunchCommand | Relay | RelayDeliver | Sync
)


def is_beacon_message(data: bytes) -> bool:
    """True when a datagram is in the beacon message space (first byte < 0x10)."""
    return len(data) > 0 and data[0] < BEACON_MSG_LIMIT


def encode_endpoint(addr: Addr) -> bytes:
    """``iplen | ip | port`` for an IP literal address (4 bytes when it has an IPv4 form).

    Raises:
        WireError: when the host is not an IP literal or the port is out of range.
    """
    host, port = addr
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError as exc:
        raise WireError(f"not an IP literal: {host!r}") from exc
    if not 0 <= port <= 0xFFFF:
        raise WireError(f"port out of range: {port}")
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    raw = ip.packed
    return bytes([len(raw)]) + raw + _PORT.pack(port)


def decode_endpoint(data: bytes | memoryview) -> Addr:
    """Inverse of :func:`encode_endpoint`; trailing bytes are ignored.

    Raises:
        WireError: empty input, an ``iplen`` other than 4 or 16, or too few bytes.
    """
    if len(data) < 1:
        raise WireError("endpoint: empty")
    iplen = data[0]
    if iplen not in (4, 16):
        raise WireError(f"endpoint: bad IP length {iplen}")
    if len(data) < 1 + iplen + 2:
        raise WireError("endpoint: too short")
    raw = bytes(data[1 : 1 + iplen])
    (port,) = _PORT.unpack_from(data, 1 + iplen)
    if iplen == 4:
        return str(ipaddress.IPv4Address(raw)), port
    ip6 = ipaddress.IPv6Address(raw)
    if ip6.ipv4_mapped is not None:
        return str(ip6.ipv4_mapped), port
    return str(ip6), port


def encode_relay(src: int, dst: int, payload: bytes) -> bytes:
    """``05 | src | dst | payload``: the hot-path encoder used by ``write_frame``."""
    return b"\x05" + _U32U32.pack(src, dst) + payload


def encode_message(msg: BeaconMessage) -> bytes:
    """Encode one beacon message.

    Raises:
        WireError: a field is out of range (node ID, port, too many sync IDs)
            or an address is not an IP literal.
    """
    match msg:
        case Discover(node_id, extra):
            _check_u32(node_id, "node ID")
            return b"\x01" + _U32.pack(node_id) + extra
        case DiscoverReply(addr):
            return b"\x02" + encode_endpoint(addr)
        case PunchRequest(requester, target, extra):
            _check_u32(requester, "requester")
            _check_u32(target, "target")
            return b"\x03" + _U32U32.pack(requester, target) + extra
        case PunchCommand(addr):
            return b"\x04" + encode_endpoint(addr)
        case Relay(src, dst, payload):
            _check_u32(src, "source")
            _check_u32(dst, "destination")
            return encode_relay(src, dst, payload)
        case RelayDeliver(src, payload):
            _check_u32(src, "source")
            return b"\x06" + _U32.pack(src) + payload
        case Sync(beacon_id, node_ids):
            _check_u32(beacon_id, "beacon ID")
            if len(node_ids) > MAX_SYNC_NODES:
                raise WireError(f"sync: too many node IDs ({len(node_ids)})")
            for node_id in node_ids:
                _check_u32(node_id, "node ID")
            head = _SYNC_HEAD.pack(beacon_id, len(node_ids))
            return b"\x07" + head + struct.pack(f">{len(node_ids)}I", *node_ids)
    raise WireError(f"not a beacon message: {msg!r}")  # pragma: no cover - typing guard


def decode_message(data: bytes) -> BeaconMessage:
    """Decode one datagram from the beacon message space.

    Raises:
        WireError: empty, unknown type, or a body shorter than its layout needs
            ("Beacon rules"). Trailing bytes are kept in ``extra`` for
            Discover and PunchRequest and ignored for the rest.
    """
    if not data:
        raise WireError("empty datagram")
    kind = data[0]
    body = memoryview(data)[1:]
    if kind == MSG_DISCOVER:
        if len(body) < 4:
            raise WireError("discover: body shorter than 4 bytes")
        return Discover(_U32.unpack_from(body)[0], bytes(body[4:]))
    if kind == MSG_DISCOVER_REPLY:
        return DiscoverReply(decode_endpoint(body))
    if kind == MSG_PUNCH_REQUEST:
        if len(body) < 8:
            raise WireError("punch request: body shorter than 8 bytes")
        requester, target = _U32U32.unpack_from(body)
        return PunchRequest(requester, target, bytes(body[8:]))
    if kind == MSG_PUNCH_COMMAND:
        return PunchCommand(decode_endpoint(body))
    if kind == MSG_RELAY:
        if len(body) < 8:
            raise WireError("relay: body shorter than 8 bytes")
        src, dst = _U32U32.unpack_from(body)
        return Relay(src, dst, bytes(body[8:]))
    if kind == MSG_RELAY_DELIVER:
        if len(body) < 4:
            raise WireError("relay deliver: body shorter than 4 bytes")
        return RelayDeliver(_U32.unpack_from(body)[0], bytes(body[4:]))
    if kind == MSG_SYNC:
        if len(body) < 6:
            raise WireError("sync: body shorter than 6 bytes")
        beacon_id, count = _SYNC_HEAD.unpack_from(body)
        if len(body) < 6 + 4 * count:
            raise WireError(f"sync: body too short for {count} node IDs")
        return Sync(beacon_id, struct.unpack_from(f">{count}I", body, 6))
    raise WireError(f"unknown beacon message type 0x{kind:02x}")
