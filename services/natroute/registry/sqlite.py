"""The SQLite backend of :class:`~.store.Store`: one file, one process at a time.

Writes run on one writer thread and are **group-committed**: whatever calls
are waiting when a transaction starts share it (each in its own savepoint, so
one refused call changes nothing and does not disturb the others), and each
caller is answered only after the ``COMMIT`` returned. With
``synchronous=FULL`` (the default) every commit is fsynced, so anything
acknowledged survives a SIGKILL and a power cut, and one fsync serves many
heartbeats. ``NORMAL`` still survives a process kill in WAL mode (the WAL is
written before commit returns; only the fsync is deferred) but may lose the
last commits on power loss.

Several processes may share one file (one host): their writers queue on an
advisory lock of the file beside it (``<db>.writers``, ``flock``) before
each transaction, so a waiting writer starts the moment the other commits.
SQLite's own lock alone would do for correctness, but its busy handler
sleeps between retries (up to 100 ms at a time): two replicas on one file
answered about a fifth fewer heartbeats, with a p99 latency four to five
times longer (registry README, "Figures").

Reads run inline on the caller's event loop on a second connection: in WAL
mode a reader never waits for the writer and sees every committed write, a
point lookup costs microseconds, and a thread hop would cost more.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import queue
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

from .batching import Batcher
from .schema import migrations
from .store import (
    ID_TRIES,
    NODE_COLUMNS,
    BackendBase,
    BeaconRecord,
    IdSpaceExhaustedError,
    NameTakenError,
    NodeNotFoundError,
    NodeRecord,
    StoreConfig,
    StoreError,
    StoreUnavailableError,
    check_newer,
    check_skew,
    draw_node_id,
    heartbeat_refusal,
    heartbeat_values,
    is_live,
    node_from_row,
    registered_values,
    store_busy,
    store_closed,
    upsert_node,
)

__all__ = ["MIGRATIONS", "SqliteStore"]

T = TypeVar("T")

#: The schema scripts for SQLite; ``PRAGMA user_version`` counts those applied.
MIGRATIONS: Final = migrations("sqlite")
#: Most calls sharing one transaction.
_BATCH: Final = 256
#: How long a busy writer waits for more calls before committing (seconds).
_GATHER: Final = 0.001
#: The writer counts as busy when its last commit ended this recently (seconds).
_BUSY: Final = 0.003
#: A heartbeat claims its timestamp: only a newer one, only for a node with a record.
_CLAIM: Final = (
    "UPDATE identities SET last_ts_us = ? WHERE node_id = ? AND last_ts_us < ? "
    "AND EXISTS (SELECT 1 FROM nodes WHERE node_id = ?) RETURNING ed25519, created_at"
)
#: ... then refreshes the node, returning the columns of ``NODE_COLUMNS`` it holds.
_TOUCH: Final = (
    "UPDATE nodes SET last_seen = ?, endpoint = coalesce(?, endpoint), "
    "relay_only = coalesce(?, relay_only), candidates = coalesce(?, candidates), "
    "transport = coalesce(?, transport) WHERE node_id = ? RETURNING x25519, endpoint, "
    "lan_addrs, relay_only, relay_only_forced, last_seen, candidates, transport, name"
)
#: A registration's write of the node record.
_UPSERT_NODE: Final = upsert_node(["?"] * 9)
#: A write: its function, whether it runs in a savepoint, who waits for it.
_Job = tuple[
    Callable[[sqlite3.Connection], Any], bool, asyncio.AbstractEventLoop, "asyncio.Future[Any]"
]


def _connect(path: str | Path, config: StoreConfig) -> sqlite3.Connection:
    db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={config.synchronous}")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA busy_timeout=5000")
    except BaseException:
        db.close()
        raise
    return db


def _migrate(db: sqlite3.Connection, scripts: Sequence[str]) -> None:
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version > len(scripts):
        raise StoreError(f"database schema {version} is newer than this code ({len(scripts)})")
    for number, script in enumerate(scripts[version:], start=version + 1):
        # executescript commits first; wrap each step so it applies whole.
        db.executescript(f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version={number};\nCOMMIT;")


def _node(db: sqlite3.Connection, where: str, arg: object) -> NodeRecord | None:
    rows = db.execute(
        f"SELECT {NODE_COLUMNS} FROM nodes n JOIN identities i USING (node_id) WHERE {where}",
        (arg,),
    ).fetchall()
    return node_from_row(rows[0]) if rows else None


def _refusal(db: sqlite3.Connection, node_id: int, timestamp_us: int) -> StoreError:
    """Why a heartbeat claimed nothing: no record, or not a newer timestamp."""
    rows = db.execute(
        "SELECT i.last_ts_us FROM identities i JOIN nodes n USING (node_id) WHERE node_id = ?",
        (node_id,),
    ).fetchall()
    return heartbeat_refusal(node_id, timestamp_us, int(rows[0][0]) if rows else None)


def _settle_all(settled: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in settled:
        if future.cancelled():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


class SqliteStore(BackendBase):
    """SQLite-backed registry state (see the module docstring for the threading)."""

    def __init__(
        self,
        path: str | Path,
        config: StoreConfig,
        *,
        clock: Callable[[], float],
        rng: random.Random | None = None,
    ) -> None:
        """Open (creating and migrating) the database at ``path``; starts the writer.

        Raises:
            StoreError: the database was written by a newer schema.
            StoreUnavailableError: the file cannot be opened.
        """
        super().__init__(config)
        self._clock = clock
        self._rng = rng if rng is not None else random.SystemRandom()
        self._closed = False
        try:
            self._writer = _connect(path, config)
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"cannot open SQLite database {path}: {exc}") from exc
        try:
            _migrate(self._writer, MIGRATIONS)
            self._reader = _connect(path, config)
        except BaseException as exc:
            self._writer.close()
            if isinstance(exc, sqlite3.Error):
                raise StoreUnavailableError(f"cannot use SQLite database {path}: {exc}") from exc
            raise
        self._read_lock = threading.Lock()
        try:
            self._writers = os.open(f"{path}.writers", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            self._writer.close()
            self._reader.close()
            raise StoreUnavailableError(f"cannot open the writers' lock of {path}: {exc}") from exc
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._beats: Batcher[int, tuple[int, tuple[Any, ...]], NodeRecord] = Batcher(
            self._heartbeats, busy=store_busy
        )
        self._thread = threading.Thread(target=self._run, name="registry-sqlite", daemon=True)
        self._thread.start()

    @property
    def backend(self) -> str:
        """``sqlite`` (beacon-change listeners hear this process's registrations only)."""
        return "sqlite"

    async def close(self) -> None:
        """Finish queued writes, stop the writer and close both connections."""
        if self._closed:
            return
        self._closed = True
        await self._beats.close(store_closed)
        self._jobs.put(None)
        await asyncio.to_thread(self._thread.join)
        with self._read_lock:
            self._reader.close()

    # -- plumbing ---------------------------------------------------------------

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise store_closed()
        try:
            with self._read_lock:
                return fn(self._reader)
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"database read failed: {exc}") from exc

    async def _write(self, fn: Callable[[sqlite3.Connection], T], *, savepoint: bool = True) -> T:
        """Run ``fn`` on the writer thread in the next group commit; its result once committed.

        ``savepoint=False`` is for a function that never raises (the batch of
        heartbeats returns each refusal as a value): it needs no savepoint of
        its own (two statements fewer, each a hand-over of the GIL). An error
        in it fails the batch.
        """
        if self._closed:
            raise store_closed()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((fn, savepoint, loop, future))
        return await future

    def _run(self) -> None:
        """The writer thread: one transaction per batch of waiting calls."""
        db = self._writer
        last_commit = 0.0
        while True:
            first = self._jobs.get()
            if first is None:
                break
            batch = [first]
            stop = False
            # Busy (the last commit just ended): wait a moment for company, so
            # one fsync serves several calls. Idle: commit at once.
            now = time.monotonic()
            busy = now - last_commit < _BUSY
            gather_until = now + _GATHER
            while len(batch) < _BATCH:
                remaining = gather_until - time.monotonic() if busy else 0.0
                try:
                    job = (
                        self._jobs.get(timeout=remaining)
                        if remaining > 0
                        else self._jobs.get_nowait()
                    )
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                batch.append(job)
            fcntl.flock(self._writers, fcntl.LOCK_EX)  # other processes' writers: in turn
            try:
                self._commit(db, batch)
            finally:
                fcntl.flock(self._writers, fcntl.LOCK_UN)
            last_commit = time.monotonic()
            if stop:
                break
        db.close()
        os.close(self._writers)

    @staticmethod
    def _commit(db: sqlite3.Connection, batch: list[_Job]) -> None:
        outcomes: list[tuple[bool, Any]] = []
        try:
            db.execute("BEGIN IMMEDIATE")
            for fn, savepoint, _, _ in batch:
                if not savepoint:
                    outcomes.append((True, fn(db)))  # an error fails the whole batch, below
                    continue
                db.execute("SAVEPOINT job")
                try:
                    outcomes.append((True, fn(db)))
                except Exception as exc:  # the caller gets it; the others go on
                    db.execute("ROLLBACK TO job")
                    error = exc
                    if isinstance(exc, sqlite3.Error):
                        error = StoreUnavailableError(f"database write failed: {exc}")
                    outcomes.append((False, error))
                db.execute("RELEASE job")
            db.execute("COMMIT")
        except Exception as exc:
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):  # SQLite may have rolled back itself
                    db.execute("ROLLBACK")
            failed = StoreUnavailableError(f"database write failed, nothing committed: {exc}")
            outcomes = [(False, failed)] * len(batch)
        # One wake-up per event loop for the whole batch, not one per call.
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
        for (_, _, loop, future), (ok, value) in zip(batch, outcomes, strict=True):
            by_loop.setdefault(loop, []).append((future, ok, value))
        for loop, settled in by_loop.items():
            # RuntimeError: the caller's loop is closed, nobody waits any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle_all, settled)

    def _maybe_purge(self, db: sqlite3.Connection, now: float) -> None:
        # Writer thread only; at most hourly, inside the caller's transaction.
        if self._purge_due(now):
            self._purge(db, now)

    def _purge(self, db: sqlite3.Connection, now: float) -> tuple[int, int]:
        cutoff = now - self._config.retention
        nodes = db.execute("DELETE FROM nodes WHERE last_seen < ?", (cutoff,)).rowcount
        beacons = db.execute("DELETE FROM beacons WHERE last_seen < ?", (cutoff,)).rowcount
        return nodes, beacons

    # -- reads --------------------------------------------------------------------

    async def ping(self) -> None:
        """Run a trivial query."""
        self._read(lambda db: db.execute("SELECT 1").fetchall())

    async def schema_version(self) -> int:
        """The applied migration count (``PRAGMA user_version``)."""
        return self._read(lambda db: int(db.execute("PRAGMA user_version").fetchone()[0]))

    async def identity_key(self, node_id: int) -> bytes | None:
        """The Ed25519 public key that owns ``node_id``, if the ID was ever allocated."""
        rows = self._read(
            lambda db: db.execute(
                "SELECT ed25519 FROM identities WHERE node_id = ?", (node_id,)
            ).fetchall()
        )
        return bytes(rows[0][0]) if rows else None

    async def identity_keys(self, limit: int) -> list[tuple[int, bytes]]:
        """See :meth:`.store.Store.identity_keys`."""
        rows = self._read(
            lambda db: db.execute(
                "SELECT node_id, i.ed25519 FROM nodes n JOIN identities i USING (node_id) "
                "ORDER BY n.last_seen DESC LIMIT ?",
                (limit,),
            ).fetchall()
        )
        return [(int(r[0]), bytes(r[1])) for r in rows]

    async def resolve(self, node_id: int) -> NodeRecord:
        """The live record of ``node_id``."""
        now = self._clock()
        record = self._read(lambda db: _node(db, "n.node_id = ?", node_id))
        if record is None or not is_live(record.last_seen, now, self._config.node_ttl):
            raise NodeNotFoundError(f"node {node_id} is not registered or has expired")
        return record

    async def resolve_name(self, name: str) -> NodeRecord:
        """The live record of the node called ``name``."""
        now = self._clock()
        record = self._read(lambda db: _node(db, "n.name = ?", name))
        if record is None or not is_live(record.last_seen, now, self._config.node_ttl):
            raise NodeNotFoundError(f"no live node is called {name!r}")
        return record

    async def live_nodes(self, limit: int) -> list[NodeRecord]:
        """Up to ``limit`` live nodes, by node ID."""
        cutoff = self._clock() - self._config.node_ttl
        rows = self._read(
            lambda db: db.execute(
                f"SELECT {NODE_COLUMNS} FROM nodes n JOIN identities i USING (node_id) "
                "WHERE n.last_seen >= ? ORDER BY n.node_id LIMIT ?",
                (cutoff, limit),
            ).fetchall()
        )
        return [node_from_row(row) for row in rows]

    async def live_beacons(self) -> list[BeaconRecord]:
        """Beacons registered within ``beacon_ttl``, ordered by ID."""
        cutoff = self._clock() - self._config.beacon_ttl
        rows = self._read(
            lambda db: db.execute(
                "SELECT beacon_id, addr, last_seen, stream_url FROM beacons "
                "WHERE last_seen >= ? ORDER BY beacon_id",
                (cutoff,),
            ).fetchall()
        )
        return [BeaconRecord(int(r[0]), str(r[1]), float(r[2]), r[3]) for r in rows]

    async def live_counts(self) -> tuple[int, int]:
        """``(live nodes, live beacons)``."""
        now = self._clock()

        def count(db: sqlite3.Connection) -> tuple[int, int]:
            nodes = db.execute(
                "SELECT count(*) FROM nodes WHERE last_seen >= ?", (now - self._config.node_ttl,)
            ).fetchone()[0]
            beacons = db.execute(
                "SELECT count(*) FROM beacons WHERE last_seen >= ?",
                (now - self._config.beacon_ttl,),
            ).fetchone()[0]
            return int(nodes), int(beacons)

        return self._read(count)

    # -- writes -------------------------------------------------------------------

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
        """See :meth:`.store.Store.register`."""
        now = self._clock()
        check_skew(timestamp_us, now, self._config.signature_skew)

        def job(db: sqlite3.Connection) -> tuple[NodeRecord, bool]:
            rows = db.execute(
                "SELECT node_id, last_ts_us FROM identities WHERE ed25519 = ?",
                (ed25519_public_key,),
            ).fetchall()
            if rows:
                node_id = int(rows[0][0])
                check_newer(timestamp_us, int(rows[0][1]))
                db.execute(
                    "UPDATE identities SET last_ts_us = ? WHERE node_id = ?",
                    (timestamp_us, node_id),
                )
            else:
                node_id = self._allocate_id(db)
                db.execute(
                    "INSERT INTO identities (node_id, ed25519, created_at, last_ts_us) "
                    "VALUES (?, ?, ?, ?)",
                    (node_id, ed25519_public_key, now, timestamp_us),
                )
            if name is not None:
                self._claim_name(db, name, node_id, now)
            fields = (x25519_public_key, endpoint, lan_addrs, relay_only, now, candidates)
            db.execute(_UPSERT_NODE, registered_values(node_id, *fields, transport, name))
            record = _node(db, "n.node_id = ?", node_id)
            assert record is not None
            self._maybe_purge(db, now)
            return record, not rows

        return await self._write(job)

    def _allocate_id(self, db: sqlite3.Connection) -> int:
        for _ in range(ID_TRIES):
            candidate = draw_node_id(self._rng)
            if not db.execute(
                "SELECT 1 FROM identities WHERE node_id = ?", (candidate,)
            ).fetchall():
                return candidate
        raise IdSpaceExhaustedError("no free node ID found")

    def _claim_name(self, db: sqlite3.Connection, name: str, node_id: int, now: float) -> None:
        rows = db.execute(
            "SELECT node_id, last_seen FROM nodes WHERE name = ? AND node_id != ?",
            (name, node_id),
        ).fetchall()
        if not rows:
            return
        if is_live(float(rows[0][1]), now, self._config.node_ttl):
            raise NameTakenError(f"name {name!r} is held by another live node")
        db.execute("UPDATE nodes SET name = NULL WHERE node_id = ?", (int(rows[0][0]),))

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
        """See :meth:`.store.Store.heartbeat`; one writer job with those arriving meanwhile."""
        now = self._clock()
        check_skew(timestamp_us, now, self._config.signature_skew)
        if self._closed:
            raise store_closed()
        changes = (now, *heartbeat_values(endpoint, relay_only, candidates, transport), node_id)
        return await self._beats.submit(node_id, (timestamp_us, changes))

    async def _heartbeats(
        self, batch: list[tuple[int, tuple[int, tuple[Any, ...]]]]
    ) -> dict[int, NodeRecord | Exception]:
        """A batch of heartbeats as one job of the group commit (:class:`.batching.Batcher`)."""

        def job(db: sqlite3.Connection) -> dict[int, NodeRecord | Exception]:
            # Two statements each, no read before or after: the first claims the
            # timestamp only when it is newer and the node has a record, the
            # second then always finds that record (one writer holds the lock).
            # A refused heartbeat changes nothing, so the job needs no savepoint.
            results: dict[int, NodeRecord | Exception] = {}
            for node_id, (timestamp_us, changes) in batch:
                claimed = db.execute(_CLAIM, (timestamp_us, node_id, timestamp_us, node_id))
                claim = claimed.fetchall()
                if not claim:
                    results[node_id] = _refusal(db, node_id, timestamp_us)
                    continue
                row = db.execute(_TOUCH, changes).fetchall()[0]
                key, created_at = claim[0]
                results[node_id] = node_from_row((node_id, key, *row[:5], created_at, *row[5:]))
            return results

        return await self._write(job, savepoint=False)

    async def set_relay_only_force(self, node_id: int, force: bool | None) -> NodeRecord:
        """See :meth:`.store.Store.set_relay_only_force`."""

        def job(db: sqlite3.Connection) -> NodeRecord:
            cursor = db.execute(
                "UPDATE nodes SET relay_only_forced = ? WHERE node_id = ?",
                (None if force is None else int(force), node_id),
            )
            if cursor.rowcount == 0:
                raise NodeNotFoundError(f"node {node_id} is not registered")
            record = _node(db, "n.node_id = ?", node_id)
            assert record is not None
            return record

        return await self._write(job)

    async def delete_node(self, node_id: int) -> None:
        """See :meth:`.store.Store.delete_node`."""

        def job(db: sqlite3.Connection) -> None:
            if db.execute("DELETE FROM nodes WHERE node_id = ?", (node_id,)).rowcount == 0:
                raise NodeNotFoundError(f"node {node_id} is not registered")

        await self._write(job)

    async def register_beacon(
        self, beacon_id: int, addr: str, stream_url: str | None = None
    ) -> BeaconRecord:
        """Insert or refresh a beacon; it stays listed for ``beacon_ttl`` seconds."""
        now = self._clock()

        def job(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO beacons (beacon_id, addr, last_seen, stream_url) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(beacon_id) DO UPDATE SET addr = excluded.addr, "
                "last_seen = excluded.last_seen, stream_url = excluded.stream_url",
                (beacon_id, addr, now, stream_url),
            )
            self._maybe_purge(db, now)

        await self._write(job)
        self._beacons_changed()
        return BeaconRecord(beacon_id, addr, now, stream_url)

    async def purge(self) -> tuple[int, int]:
        """Delete node details and beacons silent for longer than ``retention``."""
        now = self._clock()
        return await self._write(lambda db: self._purge(db, now))
