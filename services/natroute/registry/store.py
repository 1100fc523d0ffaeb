"""The registry's storage interface, its records and its rules; two backends.

:class:`Store` is what the HTTP shell talks to; :class:`~.sqlite.SqliteStore`
(the default, one file) and :class:`~.postgres.PostgresStore` (a shared
database, several registry replicas) implement it with the same rules, which
live here as pure functions and are checked against both backends by one
test suite (``tests/registry``):

* **Node IDs**: a uniformly random 32-bit ID in ``[1, 2**32-1]`` is allocated
  the first time an Ed25519 key registers and stored in ``identities``, which
  is never deleted: the same key always gets the same ID (across restarts and
  replicas too) and an ID is never handed to another key.
* **Replay** (see :mod:`.signing`): a signed request's timestamp must lie
  within ``signature_skew`` of the clock (:func:`check_skew`) and be strictly
  greater than the key's last accepted one (:func:`check_newer`); the new
  value is written in the same transaction as the change it authorises.
* **Expiry**: a node not heard from for ``node_ttl`` seconds is hidden from
  resolve but kept (:func:`is_live`); its details are purged after
  ``retention`` seconds of silence (its identity, and so its ID, stays).
  Beacons not re-registered within ``beacon_ttl`` drop out of the list.
* **Names**: a name belongs to one live node; a live holder of another key
  makes a registration fail (:class:`NameTakenError`), an expired holder
  loses the name to the claimant.
* **Durability**: a call returns only after its transaction committed
  (SQLite: fsynced with ``synchronous=FULL``; PostgreSQL: its WAL flushed).

Time comes from an injected wall clock (Unix seconds: records outlive the
process), randomness from an injected ``random.Random``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

from natroute.routing.addr import MAX_NODE_ID

__all__ = [
    "NODE_COLUMNS",
    "BackendBase",
    "BeaconRecord",
    "BeaconsChanged",
    "ClockSkewError",
    "IdSpaceExhaustedError",
    "KeyCache",
    "NameTakenError",
    "NodeNotFoundError",
    "NodeRecord",
    "ReplayError",
    "Store",
    "StoreConfig",
    "StoreError",
    "StoreUnavailableError",
    "check_newer",
    "check_skew",
    "draw_node_id",
    "encode_candidates",
    "heartbeat_refusal",
    "heartbeat_values",
    "is_live",
    "node_from_row",
    "registered_values",
    "store_busy",
    "store_closed",
    "upsert_node",
]

#: Draws of a random node ID before giving up (the space is 2**32).
ID_TRIES: Final = 64
#: Purging piggybacks on writes at most this often (seconds): no background task.
PURGE_INTERVAL: Final = 3600.0

#: The node columns both backends select, in :func:`node_from_row`'s order
#: (``n``: nodes, ``i``: identities).
NODE_COLUMNS: Final = (
    "n.node_id, i.ed25519, n.x25519, n.endpoint, n.lan_addrs, n.relay_only, "
    "n.relay_only_forced, i.created_at, n.last_seen, n.candidates, n.transport, n.name"
)

#: Called (without arguments) when the beacon list may have changed, also by
#: another replica; the HTTP shell drops its pre-encoded list.
BeaconsChanged = Callable[[], None]


class StoreError(Exception):
    """Root of the store's errors."""


class StoreUnavailableError(StoreError):
    """The database cannot be used (closed, unreachable, failing); retry later."""


class NodeNotFoundError(StoreError):
    """No (live, where it matters) node with that ID or name."""


class ReplayError(StoreError):
    """The timestamp is not newer than the key's last accepted one."""


class ClockSkewError(StoreError):
    """The timestamp is outside ``±signature_skew`` of the registry's clock."""


class NameTakenError(StoreError):
    """Another live node (another key) holds the name."""


class IdSpaceExhaustedError(StoreError):
    """No free node ID was found (the 32-bit space is practically full)."""


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """Store tunables, all durations in seconds."""

    node_ttl: float = 90.0
    beacon_ttl: float = 60.0
    retention: float = 30 * 86400.0
    signature_skew: float = 60.0
    synchronous: Literal["FULL", "NORMAL"] = "FULL"
    pool_size: int = 10


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """A snapshot of one registered node."""

    node_id: int
    ed25519_public_key: bytes
    x25519_public_key: bytes | None
    endpoint: str | None
    lan_addrs: tuple[str, ...]
    relay_only_self: bool
    relay_only_forced: bool | None
    created_at: float
    last_seen: float
    candidates: tuple[tuple[str, str], ...] = ()
    transport: str = "udp"
    name: str | None = None

    @property
    def relay_only(self) -> bool:
        """The effective flag: the operator's force wins over the node's own."""
        if self.relay_only_forced is not None:
            return self.relay_only_forced
        return self.relay_only_self


@dataclass(frozen=True, slots=True)
class BeaconRecord:
    """One registered beacon."""

    beacon_id: int
    addr: str
    last_seen: float
    stream_url: str | None = None


def node_from_row(row: Any) -> NodeRecord:
    """The record of a row of :data:`NODE_COLUMNS` (a sqlite3 tuple or an asyncpg Record)."""
    return NodeRecord(
        node_id=int(row[0]),
        ed25519_public_key=bytes(row[1]),
        x25519_public_key=None if row[2] is None else bytes(row[2]),
        endpoint=row[3],
        lan_addrs=tuple(json.loads(row[4])),
        relay_only_self=bool(row[5]),
        relay_only_forced=None if row[6] is None else bool(row[6]),
        created_at=float(row[7]),
        last_seen=float(row[8]),
        candidates=tuple((str(c[0]), str(c[1])) for c in json.loads(row[9])),
        transport=str(row[10]),
        name=row[11],
    )


def encode_candidates(candidates: Sequence[tuple[str, str]]) -> str:
    """Candidates as stored: JSON ``[[addr, kind], ...]``."""
    return json.dumps([[addr, kind] for addr, kind in candidates])


#: The columns a registration writes (every node column but ``relay_only_forced``).
_REGISTERED: Final = (
    "node_id",
    "x25519",
    "endpoint",
    "lan_addrs",
    "relay_only",
    "last_seen",
    "candidates",
    "transport",
    "name",
)


def upsert_node(placeholders: Sequence[str]) -> str:
    """The statement both backends write a registration with, in their placeholders.

    It inserts the node's record or replaces every registered field of it;
    the values go in :data:`_REGISTERED`'s order (:func:`registered_values`).
    """
    updates = ", ".join(f"{column} = excluded.{column}" for column in _REGISTERED[1:])
    return (
        f"INSERT INTO nodes ({', '.join(_REGISTERED)}) VALUES ({', '.join(placeholders)}) "
        f"ON CONFLICT (node_id) DO UPDATE SET {updates}"
    )


def registered_values(
    node_id: int,
    x25519_public_key: bytes | None,
    endpoint: str | None,
    lan_addrs: Sequence[str],
    relay_only: bool,
    now: float,
    candidates: Sequence[tuple[str, str]],
    transport: str,
    name: str | None,
) -> tuple[Any, ...]:
    """A registration's values for :func:`upsert_node`, as stored."""
    lan = json.dumps(list(lan_addrs))
    cands = encode_candidates(candidates)
    return (node_id, x25519_public_key, endpoint, lan, int(relay_only), now, cands, transport, name)


def heartbeat_values(
    endpoint: str | None,
    relay_only: bool | None,
    candidates: Sequence[tuple[str, str]] | None,
    transport: str | None,
) -> tuple[str | None, int | None, str | None, str | None]:
    """What a heartbeat changes, as stored (``None``: keep the stored value)."""
    relay = None if relay_only is None else int(relay_only)
    cands = None if candidates is None else encode_candidates(candidates)
    return endpoint, relay, cands, transport


def heartbeat_refusal(node_id: int, timestamp_us: int, last_ts_us: int | None) -> StoreError:
    """Why a heartbeat changed nothing, given the node's last accepted timestamp.

    ``last_ts_us`` is ``None`` when the node has no record (never registered,
    or purged): the node must register again. Otherwise the timestamp was not
    newer (:class:`ReplayError`).
    """
    if last_ts_us is None:
        return NodeNotFoundError(f"node {node_id} is not registered; register again")
    try:
        check_newer(timestamp_us, last_ts_us)
    except StoreError as exc:
        return exc
    return NodeNotFoundError(f"node {node_id} changed concurrently; retry")  # pragma: no cover


def store_closed() -> StoreUnavailableError:
    """The error of a call to a store that was closed."""
    return StoreUnavailableError("the store is closed")


def store_busy() -> StoreUnavailableError:
    """The error of a call beyond the calls allowed to wait for the database."""
    return StoreUnavailableError("too many requests are waiting for the database; retry")


def check_skew(timestamp_us: int, now: float, skew: float) -> None:
    """Refuse a timestamp further than ``skew`` seconds from ``now``.

    Raises:
        ClockSkewError: it is.
    """
    if abs(timestamp_us / 1e6 - now) > skew:
        raise ClockSkewError(
            f"timestamp is more than {skew:g} s away from registry time (registry time {now:.3f})"
        )


def check_newer(timestamp_us: int, last_ts_us: int) -> None:
    """Refuse a timestamp that is not newer than the key's last accepted one.

    Raises:
        ReplayError: it is not.
    """
    if timestamp_us <= last_ts_us:
        raise ReplayError("timestamp is not newer than the last accepted one for this key")


def is_live(last_seen: float, now: float, ttl: float) -> bool:
    """Heard from within ``ttl`` seconds (the boundary itself counts as live)."""
    return now - last_seen <= ttl


def draw_node_id(rng: random.Random) -> int:
    """A random node ID in ``[1, 2**32-1]`` (0 is never a node)."""
    return rng.randint(1, MAX_NODE_ID)


class Store(Protocol):
    """What the HTTP shell needs from a backend; every method is a coroutine.

    Errors: the domain errors above; :class:`StoreUnavailableError` when the
    database itself fails (the shell answers 503).
    """

    @property
    def backend(self) -> str:
        """``sqlite`` or ``postgresql``."""
        ...

    def on_beacons_changed(self, callback: BeaconsChanged) -> None:
        """Call ``callback`` whenever a beacon registers (here or on another replica)."""
        ...

    async def close(self) -> None:
        """Release the database (idempotent)."""
        ...

    async def ping(self) -> None:
        """Run a trivial query; raises :class:`StoreUnavailableError` when unusable."""
        ...

    async def schema_version(self) -> int:
        """How many migrations have been applied."""
        ...

    async def identity_key(self, node_id: int) -> bytes | None:
        """The Ed25519 public key that owns ``node_id``, if the ID was ever allocated."""
        ...

    async def identity_keys(self, limit: int) -> list[tuple[int, bytes]]:
        """Up to ``limit`` ``(node ID, Ed25519 key)`` of stored nodes, most recently seen first."""
        ...

    async def register(
        self,
        ed25519_public_key: bytes,
        *,
        x25519_public_key: bytes | None,
        endpoint: str | None,
        lan_addrs: Sequence[str],
        relay_only: bool,
        timestamp_us: int,
        candidates: Sequence[tuple[str, str]] = (),
        transport: str = "udp",
        name: str | None = None,
    ) -> tuple[NodeRecord, bool]:
        """Register (or re-register) the node owning ``ed25519_public_key``.

        A re-registration replaces every field the node reports (leaving
        ``relay_only`` or ``name`` out clears them); an operator force survives.

        Returns:
            The stored record and whether the key was new (an ID was allocated).

        Raises:
            ClockSkewError, ReplayError: the timestamp is not acceptable.
            NameTakenError: a live node of another key holds ``name``.
            IdSpaceExhaustedError: no free ID could be drawn.
        """
        ...

    async def heartbeat(
        self,
        node_id: int,
        *,
        timestamp_us: int,
        endpoint: str | None = None,
        relay_only: bool | None = None,
        candidates: Sequence[tuple[str, str]] | None = None,
        transport: str | None = None,
    ) -> NodeRecord:
        """Mark ``node_id`` alive now; ``None`` arguments keep the stored value.

        The caller has verified the signature with :meth:`identity_key`. A
        heartbeat revives an expired (not yet purged) node.

        Raises:
            NodeNotFoundError: no stored record (never registered, deleted or
                purged): the node must register again.
            ClockSkewError, ReplayError: the timestamp is not acceptable.
        """
        ...

    async def resolve(self, node_id: int) -> NodeRecord:
        """The live record of ``node_id``; :class:`NodeNotFoundError` otherwise."""
        ...

    async def resolve_name(self, name: str) -> NodeRecord:
        """The live record of the node called ``name``; :class:`NodeNotFoundError` otherwise."""
        ...

    async def live_nodes(self, limit: int) -> list[NodeRecord]:
        """Up to ``limit`` live nodes, by node ID."""
        ...

    async def set_relay_only_force(self, node_id: int, force: bool | None) -> NodeRecord:
        """Operator override of ``relay_only`` (``None`` clears it); any stored node.

        Raises:
            NodeNotFoundError: no stored record.
        """
        ...

    async def delete_node(self, node_id: int) -> None:
        """Drop a node's record (its ID stays reserved for its key).

        Raises:
            NodeNotFoundError: no stored record.
        """
        ...

    async def register_beacon(
        self, beacon_id: int, addr: str, stream_url: str | None = None
    ) -> BeaconRecord:
        """Insert or refresh a beacon; it stays listed for ``beacon_ttl`` seconds."""
        ...

    async def live_beacons(self) -> list[BeaconRecord]:
        """Beacons registered within ``beacon_ttl``, ordered by ID."""
        ...

    async def live_counts(self) -> tuple[int, int]:
        """``(live nodes, live beacons)`` for the metrics gauges."""
        ...

    async def purge(self) -> tuple[int, int]:
        """Delete node details and beacons silent for longer than ``retention``.

        Returns:
            ``(nodes purged, beacons purged)``.
        """
        ...


class BackendBase:
    """What both backends share: their config, the beacon-change listeners, the purge clock."""

    def __init__(self, config: StoreConfig) -> None:
        self._config = config
        self._listeners: list[BeaconsChanged] = []
        self._next_purge_at = 0.0

    def _purge_due(self, now: float) -> bool:
        """True at most once per :data:`PURGE_INTERVAL` (the first call is due)."""
        if now < self._next_purge_at:
            return False
        self._next_purge_at = now + PURGE_INTERVAL
        return True

    def on_beacons_changed(self, callback: BeaconsChanged) -> None:
        """Call ``callback`` whenever a beacon registers (see the backend for how far)."""
        self._listeners.append(callback)

    def _beacons_changed(self) -> None:
        for callback in self._listeners:
            callback()


class KeyCache:
    """Node ID → Ed25519 public key, read through to the store, at most ``capacity`` entries.

    The mapping never changes (identities are never deleted, an ID is never
    reused), so a cached entry is never stale, on any replica; it saves a
    database read on every heartbeat. Nodes heartbeat in a cycle, so the cache
    only helps when it holds them all: size it to the node count (about 150
    bytes an entry). When full, the oldest entry goes (a least-recently-used
    order would not hit more often for a cycle, and costs a move per hit).
    Unknown IDs are not cached. Entries come only from the store: a read
    (:meth:`get`), the start-up :meth:`preload`, or a registration's stored
    record (:meth:`put`), so a key is only ever cached under its own ID.
    """

    def __init__(self, capacity: int = 131072) -> None:
        self._capacity = capacity
        self._keys: dict[int, bytes] = {}

    def __len__(self) -> int:
        return len(self._keys)

    async def get(self, store: Store, node_id: int) -> bytes | None:
        """The key of ``node_id`` (``None`` if the ID was never allocated)."""
        key = self._keys.get(node_id)
        if key is not None:
            return key
        key = await store.identity_key(node_id)
        if key is not None:
            self.put(node_id, key)
        return key

    def put(self, node_id: int, key: bytes) -> None:
        """Remember ``key`` for ``node_id``, as the store holds it."""
        if self._capacity <= 0 or node_id in self._keys:
            return
        if len(self._keys) >= self._capacity:
            del self._keys[next(iter(self._keys))]
        self._keys[node_id] = key

    async def preload(self, store: Store) -> int:
        """Fill the cache with the most recently seen nodes; returns how many were added.

        Run once at start: without it every node's first heartbeat after a
        restart also reads its key. The least recently seen of them go
        first when the cache is full later.
        """
        if self._capacity <= 0:
            return 0
        before = len(self._keys)
        for node_id, key in reversed(await store.identity_keys(self._capacity)):
            self.put(node_id, key)
        return len(self._keys) - before
