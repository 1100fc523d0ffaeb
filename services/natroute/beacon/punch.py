"""Punch coordination across beacons: a request for a node another beacon holds.

A PunchRequest names a target this beacon may not hold: the target may be
registered at a peer beacon (gossip says which). Upstream beacons drop such a
request ("target not found"), so a pair split across two beacons waits for
its relay path to be noticed before anything punches. natroute beacons
forward it instead (docs/protocol.md, "Punch coordination across beacons"):

1. beacon A, asked by R for target T that peer beacon B announces, sends B
   ``0x08 PunchForward | requester u32 | target u32 | R's endpoint``;
2. B, holding T, sends T a PunchCommand towards R's endpoint and answers A
   ``0x09 PunchForwardReply | requester u32 | target u32 | T's endpoint``;
3. A sends R a PunchCommand towards T's endpoint.

Both messages are accepted only from a known peer beacon, like gossip, and
only act on nodes the receiving beacon holds itself; every node still hears
punch commands from its own beacon only. Upstream beacons ignore the two
codes (they are below ``0x10``, so never mistaken for tunnel frames).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from natroute.routing.errors import WireError
from natroute.routing.types import Addr
from natroute.routing.wire import decode_endpoint, encode_endpoint

__all__ = [
    "MSG_PUNCH_FORWARD",
    "MSG_PUNCH_FORWARD_REPLY",
    "PunchForward",
    "decode_punch_forward",
    "encode_punch_forward",
]

MSG_PUNCH_FORWARD: Final = 0x08
MSG_PUNCH_FORWARD_REPLY: Final = 0x09
_IDS = struct.Struct(">II")


@dataclass(frozen=True, slots=True)
class PunchForward:
    """A forwarded punch (``reply`` False) or its answer (``reply`` True).

    ``endpoint`` is the requester's endpoint in a forward and the target's
    endpoint in a reply.
    """

    reply: bool
    requester: int
    target: int
    endpoint: Addr


def encode_punch_forward(msg: PunchForward) -> bytes:
    """The wire form of a forward or a reply."""
    code = MSG_PUNCH_FORWARD_REPLY if msg.reply else MSG_PUNCH_FORWARD
    return bytes([code]) + _IDS.pack(msg.requester, msg.target) + encode_endpoint(msg.endpoint)


def decode_punch_forward(data: bytes) -> PunchForward:
    """Decode a forward or a reply.

    Raises:
        WireError: not one of the two, truncated, trailing bytes or zero IDs.
    """
    if len(data) < 1 + _IDS.size or data[0] not in (MSG_PUNCH_FORWARD, MSG_PUNCH_FORWARD_REPLY):
        raise WireError("not a punch forward")
    requester, target = _IDS.unpack_from(data, 1)
    if requester == 0 or target == 0:
        raise WireError("punch forward with a zero node ID")
    body = data[1 + _IDS.size :]
    endpoint = decode_endpoint(body)
    if len(encode_endpoint(endpoint)) != len(body):
        raise WireError("trailing bytes after the endpoint")
    return PunchForward(data[0] == MSG_PUNCH_FORWARD_REPLY, requester, target, endpoint)
