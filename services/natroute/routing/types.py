"""Types shared by the routing core and its callers (docs/protocol.md, "The routing Manager")."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, TypeAlias

__all__ = [
    "Addr",
    "BeaconLister",
    "BlackholeCheck",
    "CounterTarget",
    "LocalNodeIDFn",
    "PeerRouting",
    "RelayAdmission",
    "SendErrorCount",
    "SendOutcome",
    "SocketSender",
]

#: A UDP endpoint: (IP literal or host name, port).
Addr: TypeAlias = tuple[str, int]

#: Returns our own node ID; ``0`` stands for "not yet known".
LocalNodeIDFn: TypeAlias = Callable[[], int]


@dataclass(frozen=True, slots=True)
class SendOutcome:
    """What ``Manager.write_frame`` put on the wire.

    Attributes:
        bytes_sent: bytes written on the wire (including a 9-byte relay header).
        was_relay: True when the frame was wrapped and sent to the beacon.
    """

    bytes_sent: int = 0
    was_relay: bool = False


class BlackholeCheck(NamedTuple):
    """What ``Manager.maybe_flip_blackhole`` found (a tuple, so it unpacks as four values).

    Attributes:
        should_relay: the peer's frames go through the relay now.
        flipped: this call moved the peer to the relay (and pinned it).
        silent_for: seconds without a direct receipt (0.0 unless a miss was counted).
        misses: the miss count after this call (0 unless a miss was counted).
    """

    should_relay: bool
    flipped: bool
    silent_for: float
    misses: int


class RelayAdmission(NamedTuple):
    """What ``Manager.mark_relay_activated_if_had_crypto`` decided for a relayed frame.

    Attributes:
        admitted: the frame may be processed (False: the relay map is full).
        newly_activated: this frame turned the peer's relay flag on.
        should_alias: the caller may use the beacon as the peer's address
            when it knows no other.
    """

    admitted: bool
    newly_activated: bool
    should_alias: bool


class SendErrorCount(NamedTuple):
    """What ``Manager.handle_send_error`` did with one send error.

    Attributes:
        flipped: this error moved the peer to the relay (and pinned it).
        errors: the peer's ICMP-unreachable errors counted, this one
            included (0 for errors that are not ICMP-unreachable).
    """

    flipped: bool
    errors: int


@dataclass(frozen=True, slots=True)
class PeerRouting:
    """An immutable snapshot of one peer's routing state (for status views)."""

    node_id: int
    relay: bool
    pinned: bool
    blackhole_misses: int
    direct_clears: int
    send_errors: int
    last_direct_recv: float | None
    last_outbound_send: float | None
    first_outbound_send: float | None


class SocketSender(Protocol):
    """The send primitive the Manager is given; a plain UDP socket fits.

    ``sendto`` raises ``OSError`` on failure, synchronously, so ICMP
    unreachable errors that the kernel reports surface where the Manager
    needs them.
    """

    def sendto(self, data: bytes, addr: Addr, /) -> int: ...


class CounterTarget(Protocol):
    """The caller's packet and byte counters, bumped on every successful send."""

    pkts_sent: int
    bytes_sent: int


class BeaconLister(Protocol):
    """The registry call the beacon-list refresh uses (``{"type": "beacon_list"}``).

    Raises on failure; returns the decoded JSON object of the response.
    """

    def send(self, msg: dict[str, Any], /) -> dict[str, Any]: ...
