"""The node table: node ID → recorded UDP endpoint, with a cap and a TTL.

Invariants (spec §2, §10 D27):

* at most ``cap`` entries; entries are kept in last-refresh order, so the
  oldest entry is first and both the sweep and the at-cap eviction of an
  expired entry are O(1) per removed entry;
* an entry whose ``last_seen + ttl <= now`` is expired: lookups treat it as
  absent even before the sweep removes it;
* the Ed25519 key bound to a node ID lives and dies with its entry.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

from natroute.routing.types import Addr

__all__ = ["NodeEntry", "NodeTable"]


@dataclass(slots=True)
class NodeEntry:
    """One registered node.

    Attributes:
        addr: the canonical source address the node registered from.
        last_seen: ``now`` of the latest refresh.
        pubkey: raw Ed25519 key bound by an authenticated discover, if any.
        auth_time: unix time of the newest accepted signed discover.
    """

    addr: Addr
    last_seen: float
    pubkey: bytes | None = None
    auth_time: int = -1


class NodeTable:
    """Capped, expiring map of node IDs to :class:`NodeEntry`."""

    def __init__(self, cap: int, ttl: float) -> None:
        """Create an empty table.

        Args:
            cap: most entries held.
            ttl: seconds without refresh after which an entry expires.
        """
        self.cap = cap
        self.ttl = ttl
        self._entries: OrderedDict[int, NodeEntry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, node_id: int, now: float) -> NodeEntry | None:
        """The live entry for ``node_id``, or None when absent or expired."""
        entry = self._entries.get(node_id)
        if entry is None or entry.last_seen + self.ttl <= now:
            return None
        return entry

    def touch(self, node_id: int, entry: NodeEntry, now: float) -> None:
        """Mark an entry (returned by :meth:`get`) refreshed at ``now``."""
        entry.last_seen = now
        self._entries.move_to_end(node_id)

    def put(self, node_id: int, addr: Addr, now: float) -> NodeEntry | None:
        """Record ``node_id`` at ``addr`` as a fresh entry (no key bound).

        Replaces any previous entry. At the cap an expired oldest entry is
        evicted to make room.

        Returns:
            The new entry, or None when the table is full of live entries.
        """
        if node_id not in self._entries and len(self._entries) >= self.cap:
            oldest_id, oldest = next(iter(self._entries.items()))
            if oldest.last_seen + self.ttl > now:
                return None
            del self._entries[oldest_id]
        entry = NodeEntry(addr=addr, last_seen=now)
        self._entries[node_id] = entry
        self._entries.move_to_end(node_id)
        return entry

    def sweep(self, now: float) -> int:
        """Remove every expired entry.

        Returns:
            How many entries were removed.
        """
        removed = 0
        entries = self._entries
        while entries:
            node_id, entry = next(iter(entries.items()))
            if entry.last_seen + self.ttl > now:
                break
            del entries[node_id]
            removed += 1
        return removed

    def live_ids(self, now: float) -> Iterator[int]:
        """Node IDs of the live entries, newest refresh first."""
        for node_id, entry in reversed(self._entries.items()):
            if entry.last_seen + self.ttl <= now:
                return
            yield node_id
