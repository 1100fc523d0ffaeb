"""What the node may send to addresses that never proved they want it.

Candidates come from the registry and from peers, so a hostile node can name
a victim's address as its own. Until an address has answered with an
authenticated frame it is *unverified*, and datagrams to it draw on three
byte budgets that refill over time: one per address, one per peer (a peer
may name several addresses) and one for all unverified addresses together
(docs/protocol.md, "Dialling budget"). The
beacons and verified addresses are never limited; our own sockets' addresses
are refused outright (:class:`~.candidates.SelfAddrs`).

Every map here is capped: verified addresses in LRU order, budgets by the
token-bucket limiter's own LRU cap.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

from natroute._service.ratelimit import RateLimit, TokenBuckets
from natroute.routing.addr import canonical_ip
from natroute.routing.types import Addr

__all__ = ["BudgetConfig", "DialBudget"]

_GLOBAL: Final = "*"


@dataclass(frozen=True, slots=True)
class BudgetConfig:
    """Byte budgets for unverified destinations (bytes and bytes per second)."""

    per_addr_burst: float = 1024.0
    per_addr_rate: float = 4.0
    per_peer_burst: float = 2048.0
    per_peer_rate: float = 8.0
    total_burst: float = 32768.0
    total_rate: float = 2048.0
    max_tracked: int = 4096


class DialBudget:
    """Verified addresses and the byte budgets of the unverified ones."""

    def __init__(self, config: BudgetConfig | None = None) -> None:
        self.config = cfg = config or BudgetConfig()
        self._verified: OrderedDict[Addr, None] = OrderedDict()
        self._per_addr: TokenBuckets[Addr] = TokenBuckets(
            RateLimit(cfg.per_addr_rate, cfg.per_addr_burst), cfg.max_tracked
        )
        self._per_peer: TokenBuckets[int] = TokenBuckets(
            RateLimit(cfg.per_peer_rate, cfg.per_peer_burst), cfg.max_tracked
        )
        self._total: TokenBuckets[str] = TokenBuckets(RateLimit(cfg.total_rate, cfg.total_burst), 1)
        self.refused = 0
        self.refused_bytes = 0

    @staticmethod
    def _key(addr: Addr) -> Addr:
        return canonical_ip(addr[0]), addr[1]

    def verify(self, addr: Addr) -> None:
        """``addr`` answered with an authenticated frame: no limit from now on."""
        key = self._key(addr)
        verified = self._verified
        if key in verified:
            verified.move_to_end(key)
            return
        verified[key] = None
        if len(verified) > self.config.max_tracked:
            verified.popitem(last=False)

    def is_verified(self, addr: Addr) -> bool:
        """Has ``addr`` ever answered with an authenticated frame (and is still remembered)?"""
        return self._key(addr) in self._verified

    def allow(self, addr: Addr, size: int, now: float, peer: int | None = None) -> bool:
        """May ``size`` bytes go to ``addr`` (a candidate of ``peer``) now?

        Takes the budget when they may. The narrowest bucket is asked first, so
        an address or peer over its own budget does not drain the shared one.
        """
        key = self._key(addr)
        if key in self._verified:
            return True
        if (
            self._per_addr.allow(key, now, size)
            and (peer is None or self._per_peer.allow(peer, now, size))
            and self._total.allow(_GLOBAL, now, size)
        ):
            return True
        self.refused += 1
        self.refused_bytes += size
        return False

    def sweep(self, now: float) -> None:
        """Forget budgets that have refilled (O(removed))."""
        self._per_addr.sweep(now)
        self._per_peer.sweep(now)
