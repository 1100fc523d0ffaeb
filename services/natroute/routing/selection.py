"""Beacon selection: pure functions of their inputs (docs/protocol.md, "Beacon selection").

Parsing the configured list, filtering addresses a public node cannot reach,
merging with the registry's list, the sticky FNV-1a hash pick, the RTT
override, the refresh decision and the selection state. Nothing here does
I/O except ``fetch_beacon_list``, which calls the injected ``BeaconLister``.
"""

from __future__ import annotations

import ipaddress
import random
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .constants import BEACON_REFRESH_JITTER
from .errors import RegistryError
from .types import BeaconLister

__all__ = [
    "BeaconSelectionState",
    "RefreshDecision",
    "clean_beacon_list",
    "compute_refresh_decision",
    "fetch_beacon_list",
    "filter_unreachable",
    "first_beacon",
    "fnv1a32",
    "initial_jitter",
    "is_unreachable_beacon_host",
    "merge_beacon_lists",
    "parse_beacon_list",
    "pick_beacon",
    "pick_beacon_with_rtt",
]

# Exactly these classes ("Beacon lists", D13), not ipaddress.is_private (which also
# covers documentation ranges, 198.18/15, 240/4, ... that upstream keeps).
_UNREACHABLE_V4 = tuple(
    ipaddress.IPv4Network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "169.254.0.0/16")
)
_UNREACHABLE_V6 = tuple(ipaddress.IPv6Network(n) for n in ("fc00::/7", "::1/128", "fe80::/10"))

_FNV_OFFSET = 0x811C9DC5
_FNV_PRIME = 0x01000193


def parse_beacon_list(s: str) -> list[str]:
    """Split a comma-separated beacon flag value (docs/protocol.md, "Beacon lists").

    Parts are stripped of whitespace; empty parts are dropped; order and
    duplicates are kept. ``""`` gives ``[]`` (the seed's nil).
    """
    return [part for part in (p.strip() for p in s.split(",")) if part]


def first_beacon(s: str) -> str:
    """First entry of ``parse_beacon_list(s)``, or ``""``."""
    beacons = parse_beacon_list(s)
    return beacons[0] if beacons else ""


def is_unreachable_beacon_host(host: str) -> bool:
    """True iff ``host`` is an IP literal a public-internet node cannot reach.

    Private (RFC 1918, fc00::/7), loopback, link-local and unspecified
    addresses ("Beacon lists"); IPv4-mapped IPv6 is classified as its IPv4 form.
    Host names, and anything else that is not an IP literal, are kept.
    """
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        else:
            return ip == ipaddress.IPv6Address("::") or any(ip in n for n in _UNREACHABLE_V6)
    return ip == ipaddress.IPv4Address("0.0.0.0") or any(ip in n for n in _UNREACHABLE_V4)


def _beacon_host(addr: str) -> str:
    """The host part of a beacon address, brackets and zone removed (D24).

    Go's ``SplitHostPort`` does not validate the port, so neither does this:
    ``"10.0.0.1:"`` and ``"10.0.0.1:x"`` still yield host ``10.0.0.1``.
    """
    if addr.startswith("["):
        end = addr.find("]")
        if end >= 0 and addr[end + 1 : end + 2] == ":":
            host = addr[1:end]
        elif end == len(addr) - 1:
            host = addr[1:-1]  # "[::1]": upstream kept it by accident (D24)
        else:
            host = addr
    else:
        host, sep, _ = addr.rpartition(":")
        if not sep or ":" in host:
            host = addr
    return host.split("%", 1)[0]


def filter_unreachable(addrs: Iterable[str] | None) -> list[str]:
    """Drop addresses whose host is an unreachable IP literal ("Beacon lists").

    Order and duplicates are kept; always returns a list. Unlike upstream,
    bracketed hosts without a port and zone-scoped addresses are classified
    too (docs/decisions.md D24): ``"[::1]"`` and ``"[fe80::1%eth0]:9001"`` are dropped.
    """
    return [a for a in addrs or () if not is_unreachable_beacon_host(_beacon_host(a))]


def merge_beacon_lists(
    bootstrap: Iterable[str] | None, discovered: Iterable[str] | None
) -> list[str]:
    """Bootstrap entries first, then new discovered ones; ``""`` and repeats skipped.

    Exact string comparison; no filtering ("Beacon lists"). The order is stable so
    the hash pick does not move while the set is unchanged.
    """
    seen: set[str] = set()
    out: list[str] = []
    for addr in (*(bootstrap or ()), *(discovered or ())):
        if addr and addr not in seen:
            seen.add(addr)
            out.append(addr)
    return out


def fnv1a32(data: bytes) -> int:
    """32-bit FNV-1a of ``data`` ("Beacon pick", D14; the seed calls it "FNV-32")."""
    h = _FNV_OFFSET
    for b in data:
        h = ((h ^ b) * _FNV_PRIME) & 0xFFFFFFFF
    return h


def pick_beacon(beacons: list[str], key: bytes | None) -> str:
    """Deterministic pick ``beacons[fnv1a32(key) % len(beacons)]`` ("Beacon pick").

    Returns ``""`` for an empty list and the only entry of a one-entry list.
    """
    if not beacons:
        return ""
    if len(beacons) == 1:
        return beacons[0]
    return beacons[fnv1a32(key or b"") % len(beacons)]


def pick_beacon_with_rtt(beacons: list[str], key: bytes | None, rtt: Mapping[str, float]) -> str:
    """The hash pick, unless it is more than 2x slower than the fastest ("Beacon pick").

    Args:
        beacons: the merged list.
        key: identity public key bytes.
        rtt: measured RTT in seconds per address; an absent entry means the
            probe failed. Entries not in ``beacons`` are ignored.
    """
    if not beacons:
        return ""
    hash_pick = pick_beacon(beacons, key)
    if not rtt:
        return hash_pick
    fastest: str | None = None
    best = 0.0
    for addr in beacons:
        if addr in rtt and (fastest is None or rtt[addr] < best):
            fastest, best = addr, rtt[addr]
    if fastest is None:
        return hash_pick
    if hash_pick not in rtt:
        return fastest
    return fastest if rtt[hash_pick] > 2 * best else hash_pick


def initial_jitter(rng: random.Random | None = None) -> float:
    """A delay in ``[0, BEACON_REFRESH_JITTER)`` seconds before the first refresh."""
    value = (rng or random).random() * BEACON_REFRESH_JITTER
    return value if value < BEACON_REFRESH_JITTER else 0.0


def clean_beacon_list(addrs: Iterable[str]) -> list[str]:
    """The registry's beacon addresses as a node uses them.

    Empty entries skipped, unreachable ones filtered out, the rest sorted in
    string order (the registry's order is arbitrary; sorting keeps the hash
    pick stable). Duplicates stay until the merge.
    """
    return sorted(filter_unreachable(a for a in addrs if a))


def fetch_beacon_list(client: BeaconLister | None) -> list[str]:
    """Ask the registry for its beacon list ("Beacon lists", D1).

    The seed's untyped call (``{"type": "beacon_list"}``): returns
    :func:`clean_beacon_list` of the listed addresses. A response without a
    ``beacons`` array gives ``[]``; malformed entries are skipped.

    Raises:
        RegistryError: no client, or the client raised (the caller keeps its
            current list).
    """
    if client is None:
        raise RegistryError("nil registry client")
    try:
        resp: Any = client.send({"type": "beacon_list"})
    except Exception as exc:
        raise RegistryError(f"beacon_list send: {exc}") from exc
    beacons = resp.get("beacons") if isinstance(resp, dict) else None
    if not isinstance(beacons, list):
        return []
    return clean_beacon_list(
        e["addr"] for e in beacons if isinstance(e, dict) and isinstance(e.get("addr"), str)
    )


@dataclass(frozen=True, slots=True)
class RefreshDecision:
    """Outcome of one refresh decision (docs/protocol.md, "Refresh decision").

    Attributes:
        new_list: merged bootstrap + discovered list.
        new_pick: hash pick over ``new_list`` (``""`` when it is empty).
        should_swap: the caller should move to ``new_pick``.
    """

    new_list: list[str]
    new_pick: str
    should_swap: bool


class BeaconSelectionState:
    """The caller's beacon picks across refresh ticks; pure data with its own lock.

    The lock serves the seed's callers, which may run the blocking
    ``refresh_tick`` in one thread while others read the pick; a caller that
    keeps the state on one thread (the sidecar, on its event loop) does not
    need it, and it costs an uncontended acquire there.
    """

    def __init__(self, bootstrap: Iterable[str] | None) -> None:
        self._lock = threading.Lock()
        self._bootstrap = list(bootstrap or ())
        self._current_list: list[str] = []
        self._current_pick = ""

    @property
    def bootstrap(self) -> list[str]:
        """A copy of the operator's bootstrap list."""
        return list(self._bootstrap)

    def snapshot(self) -> tuple[list[str], list[str], str]:
        """``(bootstrap, current_list, current_pick)``, copied under the lock."""
        with self._lock:
            return list(self._bootstrap), list(self._current_list), self._current_pick

    def get_current_pick(self) -> str:
        """The address currently set on the Manager, or ``""``."""
        with self._lock:
            return self._current_pick

    def apply_refresh_decision(self, d: RefreshDecision) -> None:
        """Commit a decision: the list always, the pick only when swapping to a non-empty one."""
        with self._lock:
            self._current_list = list(d.new_list)
            if d.should_swap and d.new_pick:
                self._current_pick = d.new_pick


def compute_refresh_decision(
    state: BeaconSelectionState, discovered: Iterable[str] | None, identity_key: bytes | None
) -> RefreshDecision:
    """Merge, pick, compare with the current pick ("Refresh decision", D3); no side effects.

    ``should_swap`` is true on the initial pick, when the current pick left
    the list, or when the hash now points elsewhere.
    """
    bootstrap, _, current = state.snapshot()
    merged = merge_beacon_lists(bootstrap, discovered)
    if not merged:
        return RefreshDecision([], "", False)
    new_pick = pick_beacon(merged, identity_key)
    return RefreshDecision(merged, new_pick, current == "" or new_pick != current)
