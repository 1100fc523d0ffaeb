"""The node table: node ID → recorded endpoint, with a cap, quotas and a TTL.

Invariants (beacon README "Node table"; docs/decisions.md D27):

* at most ``cap`` entries; an entry is *signed* while an Ed25519 key is bound
  to it and *unsigned* otherwise, and each kind is kept in its own map in
  last-refresh order, so the oldest entry of each kind is first and the
  sweep, the eviction of an expired entry and the eviction of the least
  recently seen unsigned entry are all O(1) per removed entry;
* every entry is charged to its source IP's narrow prefix (the IPv4 address
  or IPv6 /64) and wide prefix (IPv4 /24, IPv6 /48); a prefix never holds
  more than its quota, so a flood from a few prefixes cannot fill the table;
* at the cap a new *signed* node evicts the least recently seen unsigned
  entry; a new unsigned node is refused (it could only displace another
  unsigned node, which would let a flood churn out the nodes that are here);
* an entry whose ``last_seen + ttl <= now`` is expired: lookups treat it as
  absent before the sweep removes it;
* the key bound to a node ID lives and dies with its entry.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum

from natroute._service.expiry import sweep_oldest
from natroute.routing.types import Addr

from .prefix import net_key, source_key

__all__ = ["NodeEntry", "NodeTable", "Refusal"]


class Refusal(Enum):
    """Why :meth:`NodeTable.add` or :meth:`NodeTable.move` recorded nothing."""

    FULL = "full"
    QUOTA = "quota"


@dataclass(slots=True)
class NodeEntry:
    """One registered node.

    Attributes:
        addr: where relays for the node go: the canonical UDP source address
            it registered from, or a stream session's address.
        last_seen: ``now`` of the latest refresh.
        ip: the source IP the quotas charge (``addr[0]`` for UDP).
        pubkey: raw Ed25519 key bound by an authenticated registration, if any.
        auth_time: unix time of the newest accepted signed discover.
    """

    addr: Addr
    last_seen: float
    ip: str
    pubkey: bytes | None = None
    auth_time: int = -1


class NodeTable:
    """Capped, expiring map of node IDs to :class:`NodeEntry`, with prefix quotas."""

    def __init__(self, cap: int, ttl: float, quota_host: int = 0, quota_net: int = 0) -> None:
        """Create an empty table.

        Args:
            cap: most entries held.
            ttl: seconds without refresh after which an entry expires.
            quota_host: most entries per IPv4 address or IPv6 /64 (0: no quota).
            quota_net: most entries per IPv4 /24 or IPv6 /48 (0: no quota).
        """
        self.cap = cap
        self.ttl = ttl
        self.quota_host = quota_host
        self.quota_net = quota_net
        self._signed: OrderedDict[int, NodeEntry] = OrderedDict()
        self._unsigned: OrderedDict[int, NodeEntry] = OrderedDict()
        self._per_host: dict[str, int] = {}
        self._per_net: dict[str, int] = {}
        #: Live unsigned entries evicted to make room for signed nodes.
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._signed) + len(self._unsigned)

    @property
    def signed(self) -> int:
        """Entries with a bound key (expired ones not yet swept included)."""
        return len(self._signed)

    def prefixes(self) -> int:
        """Distinct narrow prefixes charged (one per address or IPv6 /64)."""
        return len(self._per_host)

    def get(self, node_id: int, now: float) -> NodeEntry | None:
        """The live entry for ``node_id``, or None when absent or expired."""
        entry = self._unsigned.get(node_id) or self._signed.get(node_id)
        if entry is None or entry.last_seen + self.ttl <= now:
            return None
        return entry

    def touch(self, node_id: int, entry: NodeEntry, now: float) -> None:
        """Mark an entry (returned by :meth:`get`) refreshed at ``now``."""
        entry.last_seen = now
        (self._unsigned if entry.pubkey is None else self._signed).move_to_end(node_id)

    def add(
        self,
        node_id: int,
        addr: Addr,
        now: float,
        *,
        ip: str | None = None,
        pubkey: bytes | None = None,
        auth_time: int = -1,
    ) -> NodeEntry | Refusal:
        """Record ``node_id`` at ``addr`` as a fresh entry.

        Replaces any previous entry of that ID. At the cap, an expired oldest
        entry is evicted to make room, else (for a signed entry only) the
        least recently seen unsigned entry.

        Args:
            node_id: the node.
            addr: where relays for it go.
            now: the refresh time.
            ip: the source IP charged to the quotas (default ``addr[0]``).
            pubkey: the bound key of a signed entry.
            auth_time: the signed time that bound it.

        Returns:
            The new entry, or why nothing was recorded.
        """
        ip = addr[0] if ip is None else ip
        self._remove(node_id)
        host, net = source_key(ip), net_key(ip)
        if self._over_quota(host, net):
            return Refusal.QUOTA
        if len(self) >= self.cap and not self._make_room(now, signed=pubkey is not None):
            return Refusal.FULL
        entry = NodeEntry(addr, now, ip, pubkey, auth_time)
        (self._unsigned if pubkey is None else self._signed)[node_id] = entry
        self._charge(host, net, 1)
        return entry

    def move(
        self, node_id: int, entry: NodeEntry, addr: Addr, now: float, *, ip: str | None = None
    ) -> Refusal | None:
        """Point a live entry at a new address, refreshed at ``now``.

        Returns:
            None when moved; :attr:`Refusal.QUOTA` when the new source's
            prefixes are full (the entry is then left as it was).
        """
        ip = addr[0] if ip is None else ip
        old_host, old_net = source_key(entry.ip), net_key(entry.ip)
        host, net = source_key(ip), net_key(ip)
        if (host, net) != (old_host, old_net):
            self._charge(old_host, old_net, -1)
            if self._over_quota(host, net):
                self._charge(old_host, old_net, 1)
                return Refusal.QUOTA
            self._charge(host, net, 1)
        entry.addr, entry.ip = addr, ip
        self.touch(node_id, entry, now)
        return None

    def bind(self, node_id: int, entry: NodeEntry, pubkey: bytes, auth_time: int) -> None:
        """Bind ``pubkey`` to a live entry (it becomes signed)."""
        if entry.pubkey is None:
            del self._unsigned[node_id]
            self._signed[node_id] = entry
        entry.pubkey = pubkey
        entry.auth_time = max(entry.auth_time, auth_time)

    def unbind(self, node_id: int, entry: NodeEntry) -> None:
        """Forget a live entry's key (it becomes unsigned)."""
        if entry.pubkey is not None:
            del self._signed[node_id]
            self._unsigned[node_id] = entry
        entry.pubkey = None
        entry.auth_time = -1

    def remove(self, node_id: int, addr: Addr) -> bool:
        """Remove ``node_id``'s entry if it is (still) at ``addr``.

        Returns:
            True when an entry was removed.
        """
        entry = self._unsigned.get(node_id) or self._signed.get(node_id)
        if entry is None or entry.addr != addr:
            return False
        self._remove(node_id)
        return True

    def sweep(self, now: float) -> int:
        """Remove every expired entry.

        Returns:
            How many entries were removed.
        """
        ttl = self.ttl

        def expired(entry: NodeEntry) -> bool:
            return entry.last_seen + ttl <= now

        return sweep_oldest(self._unsigned, expired, self._uncharge) + sweep_oldest(
            self._signed, expired, self._uncharge
        )

    def live_ids(self, now: float) -> Iterator[int]:
        """Node IDs of the live entries (signed ones first, each newest first)."""
        ttl = self.ttl
        for entries in (self._signed, self._unsigned):
            for node_id, entry in reversed(entries.items()):
                if entry.last_seen + ttl <= now:
                    break
                yield node_id

    # -- internals ---------------------------------------------------------------

    def _over_quota(self, host: str, net: str) -> bool:
        return (0 < self.quota_host <= self._per_host.get(host, 0)) or (
            0 < self.quota_net <= self._per_net.get(net, 0)
        )

    def _charge(self, host: str, net: str, delta: int) -> None:
        for counts, key in ((self._per_host, host), (self._per_net, net)):
            left = counts.get(key, 0) + delta
            if left > 0:
                counts[key] = left
            else:
                counts.pop(key, None)

    def _uncharge(self, _node_id: int, entry: NodeEntry) -> None:
        self._charge(source_key(entry.ip), net_key(entry.ip), -1)

    def _remove(self, node_id: int) -> None:
        entry = self._unsigned.pop(node_id, None) or self._signed.pop(node_id, None)
        if entry is not None:
            self._uncharge(node_id, entry)

    def _make_room(self, now: float, *, signed: bool) -> bool:
        """Free one slot at the cap: an expired entry, else (signed) an unsigned one."""
        for entries in (self._unsigned, self._signed):
            if entries:
                node_id, entry = next(iter(entries.items()))
                if entry.last_seen + self.ttl <= now:
                    del entries[node_id]
                    self._uncharge(node_id, entry)
                    return True
        if signed and self._unsigned:
            node_id, entry = self._unsigned.popitem(last=False)
            self._uncharge(node_id, entry)
            self.evictions += 1
            return True
        return False
