"""Gossip state: which peer beacon holds which node IDs (docs/decisions.md D27).

Invariants:

* only Sync datagrams from a known peer beacon address are applied; the
  peer set is the union of the static peers and the registry's beacon list,
  both given by the shell as canonical IP addresses;
* every entry maps a node ID to one peer address and a refresh time; an
  entry not refreshed for ``ttl`` seconds expires (lookups ignore it at once,
  the sweep removes it), so inconsistent gossip heals by itself;
* at most ``cap`` entries, kept in refresh order (oldest first).

A Sync *refreshes* the entries it lists instead of first deleting every entry
of its sender (the Feb-2026 upstream rule): that lets a beacon holding more
than one datagram's worth of node IDs send its list in several datagrams.
A node that left a peer is forgotten after ``ttl``; a node that moved to
another peer is remapped by that peer's next Sync.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator

from natroute._service.expiry import sweep_oldest
from natroute.routing.types import Addr

__all__ = ["GossipTable", "chunk_ids"]


class GossipTable:
    """Peer beacon addresses and the node IDs each one announced."""

    def __init__(self, cap: int, ttl: float) -> None:
        """Create an empty table.

        Args:
            cap: most gossip entries held.
            ttl: seconds after which an entry not refreshed expires.
        """
        self.cap = cap
        self.ttl = ttl
        self._static: frozenset[Addr] = frozenset()
        self._listed: frozenset[Addr] = frozenset()
        self.peers: frozenset[Addr] = frozenset()
        # node ID -> (peer address, refreshed at)
        self._entries: OrderedDict[int, tuple[Addr, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def set_static_peers(self, addrs: Iterable[Addr]) -> None:
        """Replace the configured peers (canonical IP addresses)."""
        self._static = frozenset(addrs)
        self.peers = self._static | self._listed

    def set_listed_peers(self, addrs: Iterable[Addr]) -> None:
        """Replace the peers learnt from the registry's beacon list."""
        self._listed = frozenset(addrs)
        self.peers = self._static | self._listed

    def apply(self, peer: Addr, node_ids: Iterable[int], now: float) -> int:
        """Map every listed node ID to ``peer``, refreshed at ``now``.

        Returns:
            How many IDs were not stored because the table is full.
        """
        entries = self._entries
        refused = 0
        for node_id in node_ids:
            if node_id in entries:
                entries.move_to_end(node_id)
            elif len(entries) >= self.cap:
                oldest_id, (_, stamp) = next(iter(entries.items()))
                if stamp + self.ttl > now:
                    refused += 1
                    continue
                del entries[oldest_id]
            entries[node_id] = (peer, now)
        return refused

    def lookup(self, node_id: int, now: float) -> Addr | None:
        """The peer beacon that announced ``node_id``, unless expired."""
        entry = self._entries.get(node_id)
        if entry is None or entry[1] + self.ttl <= now:
            return None
        return entry[0]

    def sweep(self, now: float) -> int:
        """Remove expired entries.

        Returns:
            How many entries were removed.
        """
        ttl = self.ttl
        return sweep_oldest(self._entries, lambda entry: entry[1] + ttl <= now)


def chunk_ids(ids: Iterable[int], size: int) -> Iterator[tuple[int, ...]]:
    """Split node IDs into tuples of at most ``size`` (one Sync datagram each).

    Yields nothing for an empty input.
    """
    chunk: list[int] = []
    for node_id in ids:
        chunk.append(node_id)
        if len(chunk) == size:
            yield tuple(chunk)
            chunk = []
    if chunk:
        yield tuple(chunk)
