"""What waits for a registry answer: payloads to unknown peers, frames from unknown senders.

Every table is capped (docs/protocol.md, "Look-ups"): at most
``max_pending_senders`` node IDs wait in each direction; each outbound queue
keeps its newest ``pending_per_peer`` payloads, each inbound list its first
``pending_inbound_per_sender`` frames. Entries older than ``hold_timeout``
are dropped by :meth:`WaitingRoom.expire`, so a registry that never answers
cannot keep the memory.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field

from natroute.routing.types import Addr

from .model import DropReason, NodeConfig

__all__ = ["HeldFrame", "WaitingRoom"]

#: A frame from an unknown sender: (frame, source address, came through the beacon).
HeldFrame = tuple[bytes, Addr, bool]


@dataclass(slots=True)
class _Held:
    since: float
    frames: list[HeldFrame] = field(default_factory=list)
    payloads: deque[bytes] = field(default_factory=deque)


class WaitingRoom:
    """Held traffic keyed by node ID, oldest first."""

    def __init__(self, config: NodeConfig) -> None:
        self._config = config
        self._out: OrderedDict[int, _Held] = OrderedDict()
        self._in: OrderedDict[int, _Held] = OrderedDict()

    @property
    def held_frames(self) -> int:
        """Inbound frames waiting, over every sender."""
        return sum(len(h.frames) for h in self._in.values())

    @property
    def held_payloads(self) -> int:
        """Outbound payloads waiting, over every destination."""
        return sum(len(h.payloads) for h in self._out.values())

    def hold_out(self, dst: int, payload: bytes, now: float) -> DropReason | None:
        """Keep a payload for ``dst``; the reason when one was dropped."""
        held = self._out.get(dst)
        if held is None:
            if len(self._out) >= self._config.max_pending_senders:
                return DropReason.PENDING_FULL
            held = self._out[dst] = _Held(now)
        dropped = None
        if len(held.payloads) >= self._config.pending_per_peer:
            held.payloads.popleft()
            dropped = DropReason.PENDING_FULL
        held.payloads.append(payload)
        return dropped

    def hold_in(self, sender: int, frame: HeldFrame, now: float) -> DropReason | None:
        """Keep a frame of an unknown sender; the reason when refused."""
        held = self._in.get(sender)
        if held is None:
            if len(self._in) >= self._config.max_pending_senders:
                return DropReason.UNKNOWN_SENDER
            held = self._in[sender] = _Held(now)
        if len(held.frames) >= self._config.pending_inbound_per_sender:
            return DropReason.PENDING_FULL
        held.frames.append(frame)
        return None

    def take(self, node_id: int) -> tuple[list[HeldFrame], list[bytes]]:
        """The look-up of ``node_id`` answered: take what waited (frames in, payloads out)."""
        held_in = self._in.pop(node_id, None)
        held_out = self._out.pop(node_id, None)
        return (
            held_in.frames if held_in is not None else [],
            list(held_out.payloads) if held_out is not None else [],
        )

    def forget(self, node_id: int) -> int:
        """Drop everything that waits for ``node_id``; returns how much was dropped."""
        frames, payloads = self.take(node_id)
        return len(frames) + len(payloads)

    def waiting(self, node_id: int) -> bool:
        """Does anything wait for ``node_id``?"""
        return node_id in self._in or node_id in self._out

    def node_ids(self) -> list[int]:
        """Node IDs something waits for (in either direction)."""
        return list(self._in.keys() | self._out.keys())

    def expire(self, now: float) -> int:
        """Drop what has waited longer than ``hold_timeout``; how many items were dropped."""
        limit = self._config.hold_timeout
        dropped = 0
        for table in (self._in, self._out):
            while table:
                node_id, held = next(iter(table.items()))
                if now - held.since < limit:
                    break
                del table[node_id]
                dropped += len(held.frames) + len(held.payloads)
        return dropped
