"""One beacon refresh tick, as the daemon's loop runs it (docs/protocol.md, "Refresh tick").

Synchronous and driven by the caller: the sidecar calls :func:`refresh_tick`
once after ``initial_jitter()`` and then every ``BEACON_REFRESH_INTERVAL``
(from a worker thread, since the registry call and the cache write block).
Every collaborator is injected: the registry (a typed :data:`BeaconSource`,
or the seed's ``BeaconLister``), the Manager, the RTT prober and the wall
clock.

Deliberate differences from upstream (docs/decisions.md): the cache is saved
only with a list that came from the registry, so falling back to the cache
never renews its ``saved_at`` (D23); a fallback cache older than
``cache_max_age`` is refused (a later upstream rule).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum

from .cache import load_beacon_cache_entry, save_beacon_cache
from .constants import BEACON_CACHE_MAX_AGE
from .errors import CacheError, RegistryError, ResolveError
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
    "RefreshOutcome",
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


def _discover(lister: BeaconLister | None, source: BeaconSource | None) -> list[str]:
    """The registry's list, through ``source`` when given, else the seed's ``lister``.

    Raises:
        RegistryError: the call failed.
    """
    if source is None:
        return fetch_beacon_list(lister)
    try:
        addrs = list(source())
    except RegistryError:
        raise
    except Exception as exc:
        raise RegistryError(f"beacon list: {exc}") from exc
    return clean_beacon_list(addrs)


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
    errors: list[str] = []
    try:
        discovered = _discover(lister, beacon_source)
        source = ListSource.REGISTRY
    except RegistryError as exc:
        errors.append(str(exc))
        if not first_tick:
            return RefreshOutcome(ListSource.NONE, errors=tuple(errors))
        try:
            entry = load_beacon_cache_entry(identity_path)
        except CacheError as cache_exc:
            errors.append(str(cache_exc))
            return RefreshOutcome(ListSource.NONE, errors=tuple(errors))
        if entry is None or not entry.addrs:
            return RefreshOutcome(ListSource.NONE, errors=tuple(errors))
        age = (wall_clock() - entry.saved_at).total_seconds()
        if age > cache_max_age:
            errors.append(f"beacon cache is stale ({age:.0f} s old)")
            return RefreshOutcome(ListSource.NONE, errors=tuple(errors))
        discovered = filter_unreachable(entry.addrs)
        if not discovered:
            return RefreshOutcome(ListSource.NONE, errors=tuple(errors))
        source = ListSource.CACHE

    decision = compute_refresh_decision(state, discovered, identity_key)
    reason = PickReason.HASH
    rtt: dict[str, float] = {}
    if prober is not None and len(decision.new_list) > 1:
        rtt = {a: t for a, t in prober(list(decision.new_list)).items() if t > 0}
        if rtt:
            pick = pick_beacon_with_rtt(decision.new_list, identity_key, rtt)
            if pick != decision.new_pick:
                reason = PickReason.RTT_OVERRIDE
            decision = RefreshDecision(decision.new_list, pick, pick != state.get_current_pick())

    def save() -> None:
        if source is ListSource.REGISTRY and discovered:
            try:
                save_beacon_cache(identity_path, discovered, now=wall_clock())
            except CacheError as exc:
                errors.append(str(exc))

    def outcome(swapped: bool = False, registered: bool = False) -> RefreshOutcome:
        return RefreshOutcome(
            source, discovered, decision, reason, rtt, swapped, registered, tuple(errors)
        )

    if not decision.should_swap or not decision.new_pick:
        save()
        return outcome()
    try:
        manager.set_beacon_addr(decision.new_pick)
    except ResolveError as exc:
        errors.append(str(exc))
        return outcome()
    state.apply_refresh_decision(decision)
    registered = True
    try:
        manager.register_with_beacon()
    except OSError as exc:
        errors.append(f"register with beacon: {exc}")
        registered = False
    save()
    return outcome(True, registered)
