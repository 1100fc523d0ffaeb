"""Beacon health: notice a dead beacon and keep the refresh from picking it again.

The beacon answers every keepalive Discover with a DiscoverReply. When the
current beacon has not answered for ``dead_after`` seconds it is put in
quarantine and a refresh tick runs without it: the hash pick moves to the
next beacon (docs/protocol.md, "Refresh decision") without waiting for the
registry's 60 s TTL. A quarantined beacon is released once it answers a
probe again, and the regular refresh may then move nodes back to it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Protocol

from natroute.routing.errors import RoutingError
from natroute.routing.selection import BeaconSelectionState, RefreshDecision

__all__ = ["BeaconHealth", "QuarantineLister", "probe_alive"]


class BeaconHealth:
    """When the current beacon last answered, and which beacons are quarantined.

    Args:
        clock: monotonic seconds.
        dead_after: silence after which the current beacon counts as dead.
        release_after: a quarantined beacon is probed again after this long.
    """

    def __init__(self, clock: Callable[[], float], dead_after: float, release_after: float) -> None:
        self._clock = clock
        self.dead_after = dead_after
        self.release_after = release_after
        self.quarantine: dict[str, float] = {}
        self.current = ""
        self.since = clock()
        self.last_reply: float | None = None

    def picked(self, addr: str) -> None:
        """A (new) beacon is in use from now on."""
        if addr != self.current:
            self.current = addr
            self.since = self._clock()
            self.last_reply = None

    def replied(self, at: float | None = None) -> None:
        """The current beacon answered a keepalive (at ``at``, default now)."""
        stamp = self._clock() if at is None else at
        if stamp < self.since:
            return  # a reply from before this beacon was picked (again)
        if self.last_reply is None or stamp > self.last_reply:
            self.last_reply = stamp

    def is_dead(self) -> bool:
        """The current beacon has been silent for longer than ``dead_after``."""
        if not self.current:
            return False
        heard = self.last_reply if self.last_reply is not None else self.since
        return self._clock() - heard > self.dead_after

    def mark_dead(self) -> str:
        """Quarantine the current beacon; returns its address."""
        addr = self.current
        self.quarantine[addr] = self._clock()
        return addr

    def due_for_probe(self) -> list[str]:
        """Quarantined beacons old enough to be probed for release."""
        now = self._clock()
        return [a for a, t in self.quarantine.items() if now - t >= self.release_after]

    def release(self, addr: str) -> None:
        """The beacon answered again: it may be picked."""
        self.quarantine.pop(addr, None)

    def view(self, state: BeaconSelectionState) -> BeaconSelectionState:
        """A copy of ``state`` whose bootstrap list leaves out quarantined beacons."""
        bootstrap, current, pick = state.snapshot()
        view = BeaconSelectionState([b for b in bootstrap if b not in self.quarantine])
        view.apply_refresh_decision(RefreshDecision(current, pick, True))
        return view

    @staticmethod
    def commit(state: BeaconSelectionState, decision: RefreshDecision, swapped: bool) -> None:
        """Apply a decision computed on a view back to the real state."""
        state.apply_refresh_decision(replace(decision, should_swap=swapped))


class _Listed(Protocol):
    @property
    def addr(self) -> str: ...


class _BeaconList(Protocol):
    async def beacons(self) -> Sequence[_Listed]: ...


class QuarantineLister:
    """The refresh's beacon source: the registry's live beacons, quarantined ones hidden.

    A typed call (``AsyncRegistryClient.beacons()``, awaited on the loop)
    rather than the seed's ``{"type": "beacon_list"}`` message.
    """

    def __init__(self, registry: _BeaconList, health: BeaconHealth) -> None:
        self._registry = registry
        self._health = health

    async def __call__(self) -> list[str]:
        """The listed addresses, without those quarantined when the answer came.

        Raises:
            RegistryError: the registry could not be asked.
        """
        listed = await self._registry.beacons()
        hidden = self._health.quarantine
        return [b.addr for b in listed if b.addr not in hidden]


async def probe_alive(probe: Callable[[str], Awaitable[float]], addr: str) -> bool:
    """True when ``probe(addr)`` measured an RTT (the beacon answers)."""
    try:
        await probe(addr)
    except RoutingError:
        return False
    return True
