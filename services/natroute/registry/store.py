"""The registry's core: node identities, node records and beacons in SQLite.

No HTTP here. Time comes from an injected clock (wall-clock Unix seconds,
because records outlive the process), randomness from an injected
``random.Random``. One connection guarded by a lock serves every thread
(FastAPI runs the sync endpoints in a threadpool).

Invariants and policies:

* **Node IDs** (issue "Identity"): a uniformly random 32-bit ID in
  ``[1, 2**32-1]`` is allocated the first time an Ed25519 key registers and
  stored in ``identities``, which is never deleted: the same key always gets
  the same ID (across restarts too) and an ID is never handed to another key.
* **Replay** (see :mod:`.signing`): every signed request carries a timestamp
  that must lie within ``signature_skew`` of the clock and be strictly greater
  than the key's last accepted one; the new value is written in the same
  transaction as the change it authorises.
* **Expiry**: a node not heard from for ``node_ttl`` seconds is hidden from
  resolve but kept; its details (endpoint, keys, addresses) are purged after
  ``retention`` seconds of silence (its identity row, and so its ID, stays).
  Beacons not re-registered within ``beacon_ttl`` drop out of the list
  (spec §4.2) and are purged after ``retention`` as well.
* **Durability**: WAL with ``synchronous=FULL`` by default: every commit is
  fsynced before the call returns, so anything acknowledged survives a
  SIGKILL and a power cut. ``NORMAL`` (a setting) still survives a process
  kill in WAL mode — the WAL is written before commit returns, only the fsync
  is deferred — but may lose the last commits on power loss.
"""

from __future__ import annotations

import json
import random
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from natroute.routing.addr import MAX_NODE_ID

__all__ = [
    "MIGRATIONS",
    "BeaconRecord",
    "ClockSkewError",
    "IdSpaceExhaustedError",
    "NameTakenError",
    "NodeNotFoundError",
    "NodeRecord",
    "ReplayError",
    "Store",
    "StoreConfig",
    "StoreError",
]

#: Schema migrations; ``PRAGMA user_version`` is the number applied so far.
MIGRATIONS: Final[tuple[str, ...]] = (
    """
    CREATE TABLE identities (
        node_id     INTEGER PRIMARY KEY,
        ed25519     BLOB    NOT NULL UNIQUE,
        created_at  REAL    NOT NULL,
        last_ts_us  INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE nodes (
        node_id           INTEGER PRIMARY KEY REFERENCES identities(node_id),
        x25519            BLOB,
        endpoint          TEXT,
        lan_addrs         TEXT    NOT NULL,
        relay_only        INTEGER NOT NULL,
        relay_only_forced INTEGER,
        last_seen         REAL    NOT NULL
    );
    CREATE INDEX nodes_last_seen ON nodes(last_seen);
    CREATE TABLE beacons (
        beacon_id INTEGER PRIMARY KEY,
        addr      TEXT NOT NULL,
        last_seen REAL NOT NULL
    );
    CREATE INDEX beacons_last_seen ON beacons(last_seen);
    """,
    """
    ALTER TABLE nodes ADD COLUMN candidates TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE nodes ADD COLUMN transport TEXT NOT NULL DEFAULT 'udp';
    ALTER TABLE nodes ADD COLUMN name TEXT;
    CREATE UNIQUE INDEX nodes_name ON nodes(name) WHERE name IS NOT NULL;
    ALTER TABLE beacons ADD COLUMN stream_url TEXT;
    """,
)

_ID_TRIES: Final = 64
_PURGE_INTERVAL: Final = 3600.0
_NODE_COLUMNS: Final = (
    "n.node_id, i.ed25519, n.x25519, n.endpoint, n.lan_addrs, n.relay_only, "
    "n.relay_only_forced, i.created_at, n.last_seen, n.candidates, n.transport, n.name"
)


class StoreError(Exception):
    """Root of the store's errors (the database itself failing is sqlite3's)."""


class NodeNotFoundError(StoreError):
    """No (live, where it matters) node with that ID."""


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


class Store:
    """SQLite-backed registry state; every public method is thread-safe."""

    def __init__(
        self,
        path: str | Path,
        config: StoreConfig,
        *,
        clock: Callable[[], float],
        rng: random.Random | None = None,
    ) -> None:
        """Open (creating and migrating) the database at ``path``.

        Raises:
            StoreError: the database was written by a newer schema.
            sqlite3.Error: the file cannot be opened.
        """
        self._config = config
        self._clock = clock
        self._rng = rng if rng is not None else random.SystemRandom()
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={config.synchronous}")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._migrate(MIGRATIONS)
        except BaseException:
            self._db.close()
            raise
        self._next_purge_at = 0.0

    @property
    def config(self) -> StoreConfig:
        """The tunables this store was opened with."""
        return self._config

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            self._db.close()

    def schema_version(self) -> int:
        """The applied migration count (``PRAGMA user_version``)."""
        with self._lock:
            return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def ping(self) -> None:
        """Run a trivial query; raises ``sqlite3.Error`` when the DB is unusable."""
        with self._lock:
            self._db.execute("SELECT 1").fetchone()

    def _migrate(self, migrations: Sequence[str]) -> None:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > len(migrations):
            raise StoreError(
                f"database schema {version} is newer than this code ({len(migrations)})"
            )
        for number, script in enumerate(migrations[version:], start=version + 1):
            # executescript commits first; wrap each step so it applies whole.
            self._db.executescript(
                f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version={number};\nCOMMIT;"
            )

    # -- signed-request bookkeeping -------------------------------------------------

    def _check_timestamp(self, timestamp_us: int, last_ts_us: int, now: float) -> None:
        if abs(timestamp_us / 1e6 - now) > self._config.signature_skew:
            raise ClockSkewError(
                f"timestamp is more than {self._config.signature_skew:g} s away from registry time"
            )
        if timestamp_us <= last_ts_us:
            raise ReplayError("timestamp is not newer than the last accepted one for this key")

    def identity_key(self, node_id: int) -> bytes | None:
        """The Ed25519 public key that owns ``node_id``, if the ID was ever allocated."""
        with self._lock:
            row = self._db.execute(
                "SELECT ed25519 FROM identities WHERE node_id = ?", (node_id,)
            ).fetchone()
        return None if row is None else bytes(row[0])

    # -- nodes ------------------------------------------------------------------

    def register(
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

        A re-registration replaces every field the node reports, including
        ``relay_only`` (spec §4.3: leaving it out clears it); an operator
        force survives.

        Returns:
            The stored record (with the key's stable node ID) and whether the
            key was new (an ID was allocated by this call).

        Raises:
            ClockSkewError, ReplayError: the timestamp is not acceptable.
            NameTakenError: a live node of another key holds ``name``.
            IdSpaceExhaustedError: no free ID could be drawn.
        """
        now = self._clock()
        with self._lock, self._transaction():
            row = self._db.execute(
                "SELECT node_id, last_ts_us FROM identities WHERE ed25519 = ?",
                (ed25519_public_key,),
            ).fetchone()
            self._check_timestamp(timestamp_us, 0 if row is None else int(row[1]), now)
            if row is None:
                node_id = self._allocate_id()
                self._db.execute(
                    "INSERT INTO identities (node_id, ed25519, created_at, last_ts_us) "
                    "VALUES (?, ?, ?, ?)",
                    (node_id, ed25519_public_key, now, timestamp_us),
                )
            else:
                node_id = int(row[0])
                self._db.execute(
                    "UPDATE identities SET last_ts_us = ? WHERE node_id = ?",
                    (timestamp_us, node_id),
                )
            if name is not None:
                self._claim_name(name, node_id, now)
            self._db.execute(
                "INSERT INTO nodes (node_id, x25519, endpoint, lan_addrs, relay_only, last_seen, "
                "candidates, transport, name) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(node_id) DO UPDATE SET "
                "x25519 = excluded.x25519, endpoint = excluded.endpoint, "
                "lan_addrs = excluded.lan_addrs, relay_only = excluded.relay_only, "
                "last_seen = excluded.last_seen, candidates = excluded.candidates, "
                "transport = excluded.transport, name = excluded.name",
                (
                    node_id,
                    x25519_public_key,
                    endpoint,
                    json.dumps(list(lan_addrs)),
                    int(relay_only),
                    now,
                    _encode_candidates(candidates),
                    transport,
                    name,
                ),
            )
            record = self._node(node_id)
        self._maybe_purge(now)
        assert record is not None
        return record, row is None

    def _claim_name(self, name: str, node_id: int, now: float) -> None:
        # A name belongs to a live node; an expired holder loses it to the claimant.
        row = self._db.execute(
            "SELECT node_id, last_seen FROM nodes WHERE name = ? AND node_id != ?",
            (name, node_id),
        ).fetchone()
        if row is None:
            return
        if now - float(row[1]) <= self._config.node_ttl:
            raise NameTakenError(f"name {name!r} is held by another live node")
        self._db.execute("UPDATE nodes SET name = NULL WHERE node_id = ?", (int(row[0]),))

    def _allocate_id(self) -> int:
        for _ in range(_ID_TRIES):
            candidate = self._rng.randint(1, MAX_NODE_ID)
            taken = self._db.execute(
                "SELECT 1 FROM identities WHERE node_id = ?", (candidate,)
            ).fetchone()
            if taken is None:
                return candidate
        raise IdSpaceExhaustedError("no free node ID found")

    def heartbeat(
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

        The caller has verified the signature with :meth:`identity_key`.
        A heartbeat revives an expired (not yet purged) node.

        Raises:
            NodeNotFoundError: no stored record (never registered, deleted or
                purged): the node must register again.
            ClockSkewError, ReplayError: the timestamp is not acceptable.
        """
        now = self._clock()
        with self._lock, self._transaction():
            row = self._db.execute(
                "SELECT i.last_ts_us FROM identities i JOIN nodes n USING (node_id) "
                "WHERE node_id = ?",
                (node_id,),
            ).fetchone()
            if row is None:
                raise NodeNotFoundError(f"node {node_id} is not registered")
            self._check_timestamp(timestamp_us, int(row[0]), now)
            self._db.execute(
                "UPDATE identities SET last_ts_us = ? WHERE node_id = ?", (timestamp_us, node_id)
            )
            self._db.execute(
                "UPDATE nodes SET last_seen = ?, endpoint = coalesce(?, endpoint), "
                "relay_only = coalesce(?, relay_only), candidates = coalesce(?, candidates), "
                "transport = coalesce(?, transport) WHERE node_id = ?",
                (
                    now,
                    endpoint,
                    None if relay_only is None else int(relay_only),
                    None if candidates is None else _encode_candidates(candidates),
                    transport,
                    node_id,
                ),
            )
            record = self._node(node_id)
        assert record is not None
        return record

    def resolve(self, node_id: int) -> NodeRecord:
        """The live record of ``node_id`` (heard from within ``node_ttl``).

        Raises:
            NodeNotFoundError: unknown, deleted, purged or expired.
        """
        now = self._clock()
        with self._lock:
            record = self._node(node_id)
        if record is None or now - record.last_seen > self._config.node_ttl:
            raise NodeNotFoundError(f"node {node_id} is not registered or has expired")
        return record

    def resolve_name(self, name: str) -> NodeRecord:
        """The live record of the node called ``name``.

        Raises:
            NodeNotFoundError: no live node has that name.
        """
        now = self._clock()
        with self._lock:
            row = self._db.execute("SELECT node_id FROM nodes WHERE name = ?", (name,)).fetchone()
            record = None if row is None else self._node(int(row[0]))
        if record is None or now - record.last_seen > self._config.node_ttl:
            raise NodeNotFoundError(f"no live node is called {name!r}")
        return record

    def live_nodes(self, limit: int) -> list[NodeRecord]:
        """Up to ``limit`` live nodes (heard from within ``node_ttl``), by node ID."""
        cutoff = self._clock() - self._config.node_ttl
        with self._lock:
            rows = self._db.execute(
                "SELECT n.node_id FROM nodes n WHERE n.last_seen >= ? ORDER BY n.node_id LIMIT ?",
                (cutoff, limit),
            ).fetchall()
            records = [self._node(int(row[0])) for row in rows]
        return [r for r in records if r is not None]

    def set_relay_only_force(self, node_id: int, force: bool | None) -> NodeRecord:
        """Operator override of ``relay_only``: ``True``/``False`` force, ``None`` clears.

        Applies to any stored node, live or expired.

        Raises:
            NodeNotFoundError: no stored record.
        """
        with self._lock, self._transaction():
            cursor = self._db.execute(
                "UPDATE nodes SET relay_only_forced = ? WHERE node_id = ?",
                (None if force is None else int(force), node_id),
            )
            if cursor.rowcount == 0:
                raise NodeNotFoundError(f"node {node_id} is not registered")
            record = self._node(node_id)
        assert record is not None
        return record

    def delete_node(self, node_id: int) -> None:
        """Drop a node's record (its ID stays reserved for its key).

        Raises:
            NodeNotFoundError: no stored record.
        """
        with self._lock, self._transaction():
            cursor = self._db.execute("DELETE FROM nodes WHERE node_id = ?", (node_id,))
            if cursor.rowcount == 0:
                raise NodeNotFoundError(f"node {node_id} is not registered")

    def _node(self, node_id: int) -> NodeRecord | None:
        row = self._db.execute(
            f"SELECT {_NODE_COLUMNS} FROM nodes n JOIN identities i USING (node_id) "
            "WHERE n.node_id = ?",
            (node_id,),
        ).fetchone()
        if row is None:
            return None
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

    # -- beacons (spec §4.2) ----------------------------------------------------

    def register_beacon(
        self, beacon_id: int, addr: str, stream_url: str | None = None
    ) -> BeaconRecord:
        """Insert or refresh a beacon; it stays listed for ``beacon_ttl`` seconds."""
        now = self._clock()
        with self._lock, self._transaction():
            self._db.execute(
                "INSERT INTO beacons (beacon_id, addr, last_seen, stream_url) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(beacon_id) DO UPDATE SET addr = excluded.addr, "
                "last_seen = excluded.last_seen, stream_url = excluded.stream_url",
                (beacon_id, addr, now, stream_url),
            )
        self._maybe_purge(now)
        return BeaconRecord(beacon_id, addr, now, stream_url)

    def live_beacons(self) -> list[BeaconRecord]:
        """Beacons registered within ``beacon_ttl``, ordered by ID."""
        cutoff = self._clock() - self._config.beacon_ttl
        with self._lock:
            rows = self._db.execute(
                "SELECT beacon_id, addr, last_seen, stream_url FROM beacons WHERE last_seen >= ? "
                "ORDER BY beacon_id",
                (cutoff,),
            ).fetchall()
        return [BeaconRecord(int(r[0]), str(r[1]), float(r[2]), r[3]) for r in rows]

    # -- housekeeping -----------------------------------------------------------

    def live_counts(self) -> tuple[int, int]:
        """``(live nodes, live beacons)`` for the metrics gauges."""
        now = self._clock()
        with self._lock:
            nodes = self._db.execute(
                "SELECT count(*) FROM nodes WHERE last_seen >= ?", (now - self._config.node_ttl,)
            ).fetchone()[0]
            beacons = self._db.execute(
                "SELECT count(*) FROM beacons WHERE last_seen >= ?",
                (now - self._config.beacon_ttl,),
            ).fetchone()[0]
        return int(nodes), int(beacons)

    def purge(self) -> tuple[int, int]:
        """Delete node details and beacons silent for longer than ``retention``.

        Returns:
            ``(nodes purged, beacons purged)``.
        """
        cutoff = self._clock() - self._config.retention
        with self._lock, self._transaction():
            nodes = self._db.execute("DELETE FROM nodes WHERE last_seen < ?", (cutoff,)).rowcount
            beacons = self._db.execute(
                "DELETE FROM beacons WHERE last_seen < ?", (cutoff,)
            ).rowcount
        return nodes, beacons

    def _maybe_purge(self, now: float) -> None:
        # Purging piggybacks on writes at most hourly: no background task needed.
        if now >= self._next_purge_at:
            self._next_purge_at = now + _PURGE_INTERVAL
            self.purge()

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


def _encode_candidates(candidates: Sequence[tuple[str, str]]) -> str:
    return json.dumps([[addr, kind] for addr, kind in candidates])


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on any exception)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
