"""What waits for a registry answer: payloads to unknown peers, frames from unknown senders.

Every table is capped (spec §10 D17): at most ``max_pending_senders`` node
IDs wait in each direction and at most that many lookups are in flight;
each outbound queue keeps its newest ``pending_per_peer`` payloads, each
inbound list its first ``pending_inbound_per_sender`` frames. A lookup is
repeated no more often than ``resolve_retry_interval``; lookups older than
that stop counting against the cap (a failed one must not hold it for good).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from natroute.routing.types import Addr

from .model import DropReason, NodeConfig

__all__ = ["HeldFrame", "WaitingRoom"]

#: A frame from an unknown sender: (frame, source address, came through the beacon).
HeldFrame = tuple[bytes, Addr, bool]


class WaitingRoom:
    """Held traffic and in-flight lookups, keyed by node ID.

    Args:
        config: the caps and the retry interval.
        resolve: asks the shell to look a node ID up.
    """

    def __init__(self, config: NodeConfig, resolve: Callable[[int], None]) -> None:
        self._config = config
        self._resolve = resolve
        self._out: dict[int, deque[bytes]] = {}
        self._in: dict[int, list[HeldFrame]] = {}
        self._asked: dict[int, float] = {}

    def hold_out(self, dst: int, payload: bytes, now: float) -> DropReason | None:
        """Keep a payload for ``dst`` and look ``dst`` up; the reason if one was dropped."""
        queue = self._out.get(dst)
        if queue is None:
            if len(self._out) >= self._config.max_pending_senders:
                return DropReason.PENDING_FULL
            queue = self._out[dst] = deque(maxlen=self._config.pending_per_peer)
        dropped = DropReason.PENDING_FULL if len(queue) == queue.maxlen else None
        queue.append(payload)
        self.ask(dst, now)
        return dropped

    def hold_in(self, sender: int, frame: HeldFrame, now: float) -> DropReason | None:
        """Keep a frame of an unknown sender and look it up; the reason when refused."""
        held = self._in.get(sender)
        if held is None:
            if len(self._in) >= self._config.max_pending_senders:
                return DropReason.UNKNOWN_SENDER
            held = self._in[sender] = []
        if len(held) >= self._config.pending_inbound_per_sender:
            return DropReason.PENDING_FULL
        held.append(frame)
        self.ask(sender, now)
        return None

    def ask(self, node_id: int, now: float) -> None:
        """Look ``node_id`` up unless asked recently or too many lookups are in flight."""
        retry = self._config.resolve_retry_interval
        last = self._asked.get(node_id)
        if last is not None and now - last < retry:
            return
        if last is None and len(self._asked) >= self._config.max_pending_senders:
            for stale in [k for k, t in self._asked.items() if now - t >= retry]:
                del self._asked[stale]
            if len(self._asked) >= self._config.max_pending_senders:
                return
        self._asked[node_id] = now
        self._resolve(node_id)

    def answered(self, node_id: int) -> tuple[list[HeldFrame], list[bytes]]:
        """The lookup of ``node_id`` finished: take what waited (frames in, payloads out)."""
        self._asked.pop(node_id, None)
        return self._in.pop(node_id, []), list(self._out.pop(node_id, ()))

    def forget(self, node_id: int) -> int:
        """Drop everything that waits for ``node_id``; returns how much was dropped."""
        return len(self._out.pop(node_id, ())) + len(self._in.pop(node_id, ()))

    def waiting_senders(self) -> list[int]:
        """Unknown senders whose frames still wait (to ask again on the next tick)."""
        return list(self._in)
