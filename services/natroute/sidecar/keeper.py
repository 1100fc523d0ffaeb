"""Beacon keeping: the beacon list and pick, keepalives, failover and NAT checks.

Mixed into :class:`~.service.Sidecar` (one object, one event loop); this
module holds the part of the shell that keeps a usable beacon (docs/protocol.md,
"Start-up" and "Public endpoint and NAT type"):

* the beacon refresh tick (the routing core's ``RefreshTick`` decides, and
  :mod:`.refresh` does its I/O on the loop: the registry's list, the on-disk
  cache, the bootstrap list) and its loop;
* signed discovers to the current beacon as keepalives, a dead beacon's
  quarantine and the failover to the next one;
* NAT checks through two beacons from the peer socket, at start-up and after
  every refresh, and what a verdict changes (``relay_only``, candidates).

Nothing here blocks the loop or runs in a worker thread except the beacon
cache's file I/O and the one ``connect()`` that finds the local address:
names are looked up with ``loop.getaddrinfo``, probes are asyncio UDP. The
selection state, the Manager and the engine are only touched on the loop
thread, and a refresh tick computes on a copy of the selection (with the
quarantined beacons left out) that is committed back in one step.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from natroute._service.tasks import every
from natroute.beacon.auth import sign_discover
from natroute.routing.addr import format_addr
from natroute.routing.constants import BEACON_REFRESH_JITTER, RTT_PROBE_TIMEOUT
from natroute.routing.errors import RoutingError
from natroute.routing.manager import Manager
from natroute.routing.refresh import RefreshOutcome, RefreshTick
from natroute.routing.selection import (
    BeaconSelectionState,
    compute_refresh_decision,
    initial_jitter,
)
from natroute.routing.types import Addr

from .beacons import BeaconHealth, QuarantineLister, probe_alive
from .candidates import Candidate
from .engine import Engine
from .identity import Identity
from .model import NatType
from .nat import local_addr_towards
from .refresh import probe_rtt, probe_rtts, resolve_beacon, run_refresh_tick
from .settings import Settings

__all__ = ["BeaconKeeping"]

_log = logging.getLogger(__name__)


class BeaconKeeping:
    """The sidecar's beacon list, pick, keepalives, failover and NAT checks."""

    # provided by the sidecar
    settings: Settings
    clock: Callable[[], float]
    wall_clock: Callable[[], float]
    identity: Identity
    manager: Manager
    engine: Engine
    selection: BeaconSelectionState
    health: BeaconHealth
    nat_type: NatType
    relay_only: bool
    public_endpoint: Addr | None
    local_addr: Addr | None
    bound_addr: Addr | None
    last_refresh: RefreshOutcome | None
    last_refresh_at: float | None
    started_at: float
    _lister: QuarantineLister
    _refresh_lock: asyncio.Lock
    _first_tick_done: bool
    _republish: bool
    _switching: bool

    if TYPE_CHECKING:  # the sidecar provides these

        def flush(self) -> None: ...

        def candidates(self) -> list[Candidate]: ...

        def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None: ...

        def _stream_upkeep(self) -> bool: ...

        async def use_stream(self, why: str) -> None: ...

    @property
    def nat_observations(self) -> dict[str, Addr]:
        """What each beacon saw of the peer socket in the latest NAT check."""
        verdict = self.engine.observer.verdict
        return dict(verdict.observations) if verdict is not None else {}

    # -- NAT ----------------------------------------------------------------------

    async def _check_nat(self) -> None:
        """Classify the NAT through two beacons; update relay_only and the candidates."""
        s = self.settings
        if not s.nat_detect:
            beacons = self._beacon_candidates()[:1]
        else:
            beacons = self._beacon_candidates()[:2]
        resolved: list[tuple[str, Addr]] = []
        for beacon in beacons:
            try:
                addr = await resolve_beacon(beacon, socket.AF_INET)
            except RoutingError as exc:
                _log.warning("beacon_unresolvable", extra={"beacon": beacon, "error": str(exc)})
                continue
            resolved.append((beacon, addr))
            self.engine.beacons[beacon] = addr
        if not resolved:
            return
        observer = self.engine.observer
        if self.local_addr is None and self.bound_addr is not None:
            self.local_addr = await asyncio.to_thread(
                local_addr_towards, resolved[0][1], self.bound_addr[1]
            )
            observer.local = self.local_addr
        verdict = None
        for _attempt in range(2):
            self.engine.check_nat(resolved, self.clock())
            self.flush()
            deadline = self.clock() + s.discover_timeout
            while observer.checking and self.clock() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            verdict = observer.finish_check(self.clock()) if observer.checking else observer.verdict
            if verdict is not None and verdict.observations:
                break
        self._apply_verdict(verdict.nat_type if verdict is not None else NatType.UNKNOWN)

    def _apply_verdict(self, nat_type: NatType) -> None:
        old = self.nat_type
        self.nat_type = nat_type
        self.engine.set_nat_type(nat_type)
        s = self.settings
        relay_only = (
            s.relay_only if s.relay_only is not None else (nat_type is NatType.ENDPOINT_DEPENDENT)
        )
        if relay_only != self.relay_only:
            self._republish = True
        self.relay_only = relay_only
        if self.public_endpoint is None and not s.advertise:
            self.public_endpoint = self.engine.observer.endpoint
        self.engine.set_local_candidates(self.candidates())
        log = _log.warning if old not in (NatType.UNKNOWN, nat_type) else _log.info
        log(
            "nat_classified",
            extra={
                "nat_type": nat_type.value,
                "previous": old.value,
                "observed": {k: format_addr(v) for k, v in self.nat_observations.items()},
                "relay_only": self.relay_only,
            },
        )

    # -- beacons ------------------------------------------------------------------

    async def _probe_rtts(self, addrs: list[str]) -> dict[str, float]:
        return await probe_rtts(addrs, reply_timeout=RTT_PROBE_TIMEOUT, clock=self.clock)

    def _wall_datetime(self) -> datetime:
        return datetime.fromtimestamp(self.wall_clock(), UTC)

    async def refresh_now(self) -> RefreshOutcome:
        """Run one beacon refresh tick now (the routing core's RefreshTick, on the loop).

        A picked beacon that cannot be used (its name does not resolve) is
        named in the log and quarantined, and the tick runs again without it,
        so one bad entry in the list never leaves the node without a beacon.
        """
        async with self._refresh_lock:
            await self._release_revived_beacons()
            for _ in range(8):  # at most one retry per bad entry, bounded
                outcome = await self._refresh_once()
                decision = outcome.decision
                bad = decision.new_pick if decision is not None else ""
                if outcome.swapped or not bad or not decision or not decision.should_swap:
                    break
                if bad in self.health.quarantine:
                    break
                _log.warning(
                    "beacon_unusable",
                    extra={"beacon": bad, "error": "; ".join(outcome.errors), "action": "skipped"},
                )
                self.health.quarantine[bad] = self.clock()
            return outcome

    async def _refresh_once(self) -> RefreshOutcome:
        tick = RefreshTick(
            self.health.view(self.selection),
            self.identity.ed25519_public,
            first_tick=not self._first_tick_done,
            probe=self.settings.beacon_rtt_probe,
        )
        outcome = await run_refresh_tick(
            tick,
            self.manager,
            self._lister,
            self._probe_rtts,
            self.settings.identity,
            self._wall_datetime,
        )
        self._first_tick_done = True
        self.flush()  # the registration the tick queued on the Manager's socket
        if outcome.decision is not None:
            self.health.commit(self.selection, outcome.decision, outcome.swapped)
        self.health.picked(self.selection.get_current_pick())
        self.last_refresh = outcome
        self.last_refresh_at = self.clock()
        log = _log.warning if outcome.errors else _log.info
        log(
            "beacon_refresh",
            extra={
                "source": outcome.source.value,
                "pick": self.selection.get_current_pick(),
                "reason": outcome.reason.value,
                "swapped": outcome.swapped,
                "beacons": outcome.decision.new_list if outcome.decision else [],
                "errors": list(outcome.errors),
            },
        )
        await self._resolve_beacons()
        if outcome.swapped and self.engine.node_id is not None:
            self.beacon_keepalive()
        return outcome

    async def _resolve_beacons(self) -> None:
        """Resolve every listed beacon (at once, the first 32): discovers may go to each
        of them, and one beacon listed under two names (an IP and a host name) counts once."""
        _, current, pick = self.selection.snapshot()
        names = list(dict.fromkeys([*current, pick] if pick else current))[:32]

        async def resolve(name: str) -> Addr | None:
            try:
                return await resolve_beacon(name, socket.AF_INET)
            except RoutingError:
                return None  # an unusable entry: the refresh names it when it is picked

        found = await asyncio.gather(*(resolve(name) for name in names))
        resolved = {n: a for n, a in zip(names, found, strict=True) if a is not None}
        beacon = self.manager.beacon_addr()
        if pick and beacon is not None:
            resolved[pick] = beacon
        self.engine.beacons = resolved

    @property
    def distinct_beacons(self) -> int:
        """Beacons in the list, each counted once whatever names it is listed under."""
        return len(set(self.engine.beacons.values()))

    async def _refresh_loop(self) -> None:
        # start() ran the first tick; the jitter spreads the fleet's later ticks.
        s = self.settings
        jitter = initial_jitter() * s.refresh_jitter / BEACON_REFRESH_JITTER
        await every(
            s.refresh_interval,
            self._refresh_and_check,
            name="beacon_refresh",
            logger=_log,
            event="beacon_refresh_failed",
            first=jitter + s.refresh_interval,
        )

    async def _refresh_and_check(self) -> None:
        await self.refresh_now()
        if self.settings.nat_detect:
            await self._check_nat()

    async def _pick_from_bootstrap(self) -> None:
        """No list from the registry or the cache: pick among the configured beacons."""
        decision = compute_refresh_decision(self.selection, [], self.identity.ed25519_public)
        if not decision.new_pick:
            _log.warning("no_beacon", extra={"reason": "no registry list, cache or bootstrap"})
            return
        try:
            self.manager.set_beacon_addr_udp(await resolve_beacon(decision.new_pick))
        except RoutingError as exc:
            _log.warning(
                "beacon_unresolvable", extra={"beacon": decision.new_pick, "error": str(exc)}
            )
            return
        self.selection.apply_refresh_decision(decision)
        self.health.picked(decision.new_pick)
        _log.info("beacon_picked_from_bootstrap", extra={"beacon": decision.new_pick})

    async def _release_revived_beacons(self) -> None:
        """Probe quarantined beacons that are due; release those that answer."""
        probe = partial(probe_rtt, reply_timeout=1.0, clock=self.clock)
        for addr in self.health.due_for_probe():
            if await probe_alive(probe, addr):
                _log.info("beacon_revived", extra={"beacon": addr})
                self.health.release(addr)

    def _check_beacon_alive(self) -> None:
        """Fail over when the current beacon stopped answering keepalives; move to the
        stream when no beacon has answered over UDP for ``stream_after`` seconds."""
        pick = self.selection.get_current_pick()
        replied = self.engine.observer.last_reply.get(pick)
        if replied is not None:
            self.health.replied(replied)
        answered = max(self.engine.observer.last_reply.values(), default=self.started_at)
        if (
            self.settings.stream
            and self.clock() - answered > self.settings.stream_after
            and not self._switching
        ):
            self._spawn(
                self.use_stream(
                    f"no UDP answer from any beacon for {self.settings.stream_after:g} s"
                ),
                "transport",
            )
            return
        if not self.health.is_dead() or self._refresh_lock.locked():
            return
        dead = self.health.mark_dead()
        _log.warning("beacon_dead", extra={"beacon": dead, "silent_for": self.health.dead_after})
        self._spawn(self._failover(), "failover")

    async def _failover(self) -> None:
        outcome = await self.refresh_now()
        _log.warning(
            "beacon_failover",
            extra={"pick": self.selection.get_current_pick(), "swapped": outcome.swapped},
        )

    def beacon_keepalive(self) -> None:
        """Register with the beacon (a signed Discover): endpoint record and NAT keepalive.

        On the stream: try UDP again when due, and re-attach a session that ended.
        """
        if self._stream_upkeep():
            return
        self._check_beacon_alive()
        beacon = self.manager.beacon_addr()
        node_id = self.engine.node_id
        if beacon is None or node_id is None:
            return
        extra = sign_discover(self.identity.ed25519, node_id, int(self.wall_clock()))
        pick = self.selection.get_current_pick() or format_addr(beacon)
        self.engine.send_discover(pick, beacon, self.clock(), extra)
        self.flush()

    def _beacon_candidates(self) -> list[str]:
        _, current, pick = self.selection.snapshot()
        rest = [b for b in current if b != pick]
        return ([pick] if pick else []) + rest
