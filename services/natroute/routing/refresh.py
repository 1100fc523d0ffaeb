"""One beacon refresh tick: its decisions, and the seed's blocking loop around them.

Behaviour: docs/protocol.md, "Refresh tick".

:class:`RefreshTick` is the tick without its I/O. It asks for one thing at a
time (a :class:`RefreshStep`: list the registry's beacons, read the cache,
probe RTTs, set the Manager's beacon, register with it, save the cache), the
caller does it and feeds back the result or the exception, and the tick
answers with the next step until :attr:`RefreshAction.DONE`; its
:attr:`~RefreshTick.outcome` then says what happened. Every decision lives
here, written once; a caller only moves bytes (docs/decisions.md D42). Two
callers drive it:

* :func:`refresh_tick`, the seed's blocking call (DNS, the registry call and
  the cache's fsync block the calling thread);
* the sidecar's tick on its event loop (``natroute.sidecar.refresh``), which
  awaits the same steps without blocking the loop.

Deliberate differences from upstream (docs/decisions.md): the cache is saved
only with a list that came from the registry, so falling back to the cache
never renews its ``saved_at`` (D23); a fallback cache older than
``cache_max_age`` is refused (a later upstream rule).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from functools import partial

from .cache import BeaconCacheEntry, load_beacon_cache_entry, save_beacon_cache
from .constants import BEACON_CACHE_MAX_AGE
from .errors import CacheError, RegistryError, ResolveError, UsageError
from .manager import Manager
from .selection import (
    BeaconSelectionState,
    RefreshDecision,
    clean_beacon_list,
    compute_refresh_decision,
    fetch_beacon_list,
    filter_unreachable,
    pick_beacon_with_rtt,
)
from .types import BeaconLister

__all__ = [
    "BeaconSource",
    "ListSource",
    "PickReason",
    "RefreshAction",
    "RefreshOutcome",
    "RefreshStep",
    "RefreshTick",
    "RttProber",
    "refresh_tick",
]

#: Probes every address (in parallel) and returns the RTTs of those that answered.
RttProber = Callable[[list[str]], dict[str, float]]

#: The registry's beacon addresses, as a typed call (raises on failure).
BeaconSource = Callable[[], Iterable[str]]


class ListSource(Enum):
    """Where the tick's discovered list came from."""

    REGISTRY = "registry"
    CACHE = "cache"
    NONE = "none"


class PickReason(Enum):
    """Why the pick is what it is."""

    HASH = "hash"
    RTT_OVERRIDE = "rtt_override"


class RefreshAction(Enum):
    """What a :class:`RefreshTick` wants done next, and what it is fed back.

    ``LIST``: ask the registry for its beacons; ``listed(addrs)``.
    ``READ_CACHE``: load the cache entry; ``cache_read(entry, now)``.
    ``PROBE``: measure the RTT to each of ``step.addrs``; ``measured(rtts)``.
    ``SET_BEACON``: resolve ``step.beacon`` and make it the Manager's beacon
    (unchanged on failure); ``succeeded()``.
    ``REGISTER``: ``Manager.register_with_beacon()``; ``succeeded()``.
    ``SAVE_CACHE``: save ``step.addrs`` to the cache; ``succeeded()``.
    ``DONE``: nothing more; the outcome is final.

    Any step but ``PROBE`` may fail instead: the caller catches
    ``step.failures`` and feeds the exception to ``failed(exc)``.
    """

    LIST = "list"
    READ_CACHE = "read_cache"
    PROBE = "probe"
    SET_BEACON = "set_beacon"
    REGISTER = "register"
    SAVE_CACHE = "save_cache"
    DONE = "done"


# The exceptions each step may end with: the tick turns them into an error text.
# A registry call may fail in any way (the seed wraps whatever its lister raises);
# an RTT prober reports failures by leaving the address out, so it never raises.
_FAILURES: dict[RefreshAction, tuple[type[Exception], ...]] = {
    RefreshAction.LIST: (Exception,),
    RefreshAction.READ_CACHE: (CacheError,),
    RefreshAction.PROBE: (),
    RefreshAction.SET_BEACON: (ResolveError,),
    RefreshAction.REGISTER: (OSError,),
    RefreshAction.SAVE_CACHE: (CacheError,),
    RefreshAction.DONE: (),
}


@dataclass(frozen=True, slots=True)
class RefreshStep:
    """One request of a :class:`RefreshTick` to its caller.

    Attributes:
        action: what to do.
        addrs: ``PROBE``: the beacons to measure; ``SAVE_CACHE``: the list to save.
        beacon: ``SET_BEACON``: the address to resolve and set.
    """

    action: RefreshAction
    addrs: tuple[str, ...] = ()
    beacon: str = ""

    @property
    def failures(self) -> tuple[type[Exception], ...]:
        """The exceptions this step may end with (for ``except step.failures``)."""
        return _FAILURES[self.action]


@dataclass(frozen=True, slots=True)
class RefreshOutcome:
    """What one tick saw and did; the caller logs it and shows it in status.

    Attributes:
        source: where the discovered list came from (NONE: tick skipped).
        discovered: the registry's (or cache's) list, filtered.
        decision: the refresh decision (None when the tick was skipped).
        reason: hash pick or RTT override.
        rtt: RTT measurements in seconds, when probing was on.
        swapped: the Manager now uses ``decision.new_pick``.
        registered: ``register_with_beacon`` was sent after the swap.
        errors: what went wrong, as text (registry, cache, resolve, send).
    """

    source: ListSource
    discovered: list[str] = field(default_factory=list)
    decision: RefreshDecision | None = None
    reason: PickReason = PickReason.HASH
    rtt: dict[str, float] = field(default_factory=dict)
    swapped: bool = False
    registered: bool = False
    errors: tuple[str, ...] = ()


_DONE = RefreshStep(RefreshAction.DONE)


class RefreshTick:
    """One refresh tick's decisions, fed the results of the I/O it asks for.

    Pure: no clock, no sockets, no files. The decision is computed against
    ``state``, and a swap is applied to ``state`` when the Manager has taken
    the new beacon (the moment ``SET_BEACON`` succeeds), as the seed does.

    Args:
        state: the selection state the decision is computed against.
        identity_key: the node's Ed25519 public key bytes (hash pick key).
        first_tick: only the first tick falls back to the cache.
        probe: ask for RTTs ("Beacon pick") when the list has > 1 entry.
        cache_max_age: a fallback cache older than this (seconds) is ignored.

    Raises:
        UsageError: (from the feeding methods) a result that does not answer
            the pending step.
    """

    def __init__(
        self,
        state: BeaconSelectionState,
        identity_key: bytes,
        *,
        first_tick: bool,
        probe: bool = False,
        cache_max_age: float = BEACON_CACHE_MAX_AGE,
    ) -> None:
        self._state = state
        self._key = identity_key
        self._first_tick = first_tick
        self._probe = probe
        self._max_age = cache_max_age
        self._source = ListSource.NONE
        self._discovered: list[str] = []
        self._decision: RefreshDecision | None = None
        self._reason = PickReason.HASH
        self._rtt: dict[str, float] = {}
        self._swapped = False
        self._registered = False
        self._errors: list[str] = []
        self.step = RefreshStep(RefreshAction.LIST)

    def __iter__(self) -> Iterator[RefreshStep]:
        """The pending step, again and again, until it is DONE: a caller's loop
        is ``for step in tick:``, answering each step before taking the next."""
        while self.step.action is not RefreshAction.DONE:
            yield self.step

    @property
    def outcome(self) -> RefreshOutcome:
        """What the tick saw and did so far (final once ``step`` is DONE)."""
        return RefreshOutcome(
            self._source,
            list(self._discovered),
            self._decision,
            self._reason,
            dict(self._rtt),
            self._swapped,
            self._registered,
            tuple(self._errors),
        )

    # -- feeding results ---------------------------------------------------------

    def listed(self, addrs: Iterable[str]) -> RefreshStep:
        """The registry's beacon addresses (cleaned here: filtered, sorted)."""
        self._expect(RefreshAction.LIST)
        self._source = ListSource.REGISTRY
        self._discovered = clean_beacon_list(addrs)
        return self._decide()

    def cache_read(self, entry: BeaconCacheEntry | None, now: datetime) -> RefreshStep:
        """The cache entry (None: no cache), read at wall-clock time ``now``."""
        self._expect(RefreshAction.READ_CACHE)
        if entry is None or not entry.addrs:
            return self._go(_DONE)
        age = (now - entry.saved_at).total_seconds()
        if age > self._max_age:
            self._errors.append(f"beacon cache is stale ({age:.0f} s old)")
            return self._go(_DONE)
        discovered = filter_unreachable(entry.addrs)
        if not discovered:
            return self._go(_DONE)
        self._source = ListSource.CACHE
        self._discovered = discovered
        return self._decide()

    def measured(self, rtt: Mapping[str, float]) -> RefreshStep:
        """The RTTs (seconds) of the probed beacons that answered; others absent."""
        self._expect(RefreshAction.PROBE)
        decision = self._decided()
        self._rtt = {a: t for a, t in rtt.items() if t > 0}  # D25: 0 is no measurement
        if self._rtt:
            pick = pick_beacon_with_rtt(decision.new_list, self._key, self._rtt)
            if pick != decision.new_pick:
                self._reason = PickReason.RTT_OVERRIDE
            current = self._state.get_current_pick()
            self._decision = RefreshDecision(decision.new_list, pick, pick != current)
        return self._act()

    def succeeded(self) -> RefreshStep:
        """``SET_BEACON``, ``REGISTER`` or ``SAVE_CACHE`` went through."""
        action = self.step.action
        if action is RefreshAction.SET_BEACON:
            self._state.apply_refresh_decision(self._decided())
            self._swapped = True
            return self._go(RefreshStep(RefreshAction.REGISTER))
        if action is RefreshAction.REGISTER:
            self._registered = True
            return self._save()
        self._expect(RefreshAction.SAVE_CACHE)
        return self._go(_DONE)

    def failed(self, exc: Exception) -> RefreshStep:
        """The pending step raised ``exc`` (one of ``step.failures``)."""
        action = self.step.action
        if not isinstance(exc, self.step.failures):
            raise UsageError(f"refresh tick: {action.value} cannot fail with {exc!r}")
        if action is RefreshAction.LIST:
            is_ours = isinstance(exc, RegistryError)
            self._errors.append(str(exc) if is_ours else f"beacon list: {exc}")
            if self._first_tick:
                return self._go(RefreshStep(RefreshAction.READ_CACHE))
            return self._go(_DONE)
        if action is RefreshAction.REGISTER:
            self._errors.append(f"register with beacon: {exc}")
            return self._save()
        # reading the cache, resolving the pick or saving: nothing more to do
        self._errors.append(str(exc))
        return self._go(_DONE)

    # -- decisions ----------------------------------------------------------------

    def _decide(self) -> RefreshStep:
        decision = compute_refresh_decision(self._state, self._discovered, self._key)
        self._decision = decision
        if self._probe and len(decision.new_list) > 1:
            return self._go(RefreshStep(RefreshAction.PROBE, addrs=tuple(decision.new_list)))
        return self._act()

    def _act(self) -> RefreshStep:
        decision = self._decided()
        if decision.should_swap and decision.new_pick:
            return self._go(RefreshStep(RefreshAction.SET_BEACON, beacon=decision.new_pick))
        return self._save()

    def _save(self) -> RefreshStep:
        # only the registry's own list, never the merge or a cache we fell back to (D23)
        if self._source is ListSource.REGISTRY and self._discovered:
            return self._go(RefreshStep(RefreshAction.SAVE_CACHE, addrs=tuple(self._discovered)))
        return self._go(_DONE)

    def _decided(self) -> RefreshDecision:
        assert self._decision is not None  # every step after the list has one
        return self._decision

    def _go(self, step: RefreshStep) -> RefreshStep:
        self.step = step
        return step

    def _expect(self, action: RefreshAction) -> None:
        if self.step.action is not action:
            raise UsageError(
                f"refresh tick: waiting for {self.step.action.value}, not {action.value}"
            )


def refresh_tick(
    state: BeaconSelectionState,
    manager: Manager,
    lister: BeaconLister | None,
    identity_key: bytes,
    identity_path: str,
    *,
    first_tick: bool,
    prober: RttProber | None = None,
    wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    cache_max_age: float = BEACON_CACHE_MAX_AGE,
    beacon_source: BeaconSource | None = None,
) -> RefreshOutcome:
    """Fetch the beacon list, decide, swap the Manager's beacon, save the cache.

    Blocks the calling thread on the registry call, DNS, the probes and the
    cache's fsync; an asyncio caller drives :class:`RefreshTick` instead.

    Args:
        state: the selection state the decision is computed against.
        manager: receives ``set_beacon_addr`` and ``register_with_beacon``.
        lister: the seed's registry client (None: the tick can only use the
            cache, unless ``beacon_source`` is given).
        identity_key: the node's Ed25519 public key bytes (hash pick key).
        identity_path: the identity file; the cache lives beside it.
        first_tick: only the first tick falls back to the cache.
        prober: RTT override ("Beacon pick") when given and the list has > 1 entry.
        wall_clock: the time stamped into the cache and used for its age.
        cache_max_age: a fallback cache older than this (seconds) is ignored.
        beacon_source: the registry's beacon addresses as a typed call;
            used instead of ``lister`` when given.
    """
    tick = RefreshTick(
        state,
        identity_key,
        first_tick=first_tick,
        probe=prober is not None,
        cache_max_age=cache_max_age,
    )
    for step in tick:
        try:
            match step.action:
                case RefreshAction.LIST:
                    source = beacon_source or partial(fetch_beacon_list, lister)
                    tick.listed(list(source()))
                case RefreshAction.READ_CACHE:
                    tick.cache_read(load_beacon_cache_entry(identity_path), wall_clock())
                case RefreshAction.PROBE:
                    assert prober is not None  # the tick probes only when it has one
                    tick.measured(prober(list(step.addrs)))
                case RefreshAction.SET_BEACON:
                    manager.set_beacon_addr(step.beacon)
                    tick.succeeded()
                case RefreshAction.REGISTER:
                    manager.register_with_beacon()
                    tick.succeeded()
                case _:  # SAVE_CACHE (DONE ends the loop)
                    save_beacon_cache(identity_path, step.addrs, now=wall_clock())
                    tick.succeeded()
        except step.failures as exc:
            tick.failed(exc)
    return tick.outcome
