"""The PostgreSQL backend of :class:`~.store.Store`: a shared database, many replicas.

Every registry replica connects to the same database (asyncpg, a pool per
process) and the database serialises what must be serialised:

* a key's first registration inserts its identity with ``ON CONFLICT DO
  NOTHING`` and then locks the row (``SELECT ... FOR UPDATE``): two replicas
  racing on one key both end up on the one row, so on one node ID, and the
  second sees the first's timestamp (replay protection across replicas);
* a heartbeat is one statement whose ``UPDATE ... WHERE last_ts_us < $ts``
  re-checks the timestamp after any concurrent update of the row committed;
* names are guarded by a partial unique index, so two keys racing for one
  free name cannot both win (the loser gets :class:`~.store.NameTakenError`);
* a beacon registration sends ``NOTIFY natroute_beacons``; every replica
  listens on its own connection and drops its pre-encoded beacon list.

Nothing is acknowledged before its transaction committed, and PostgreSQL
flushes its WAL at commit (unless an operator turned ``synchronous_commit``
off on the server). Driver and network failures become
:class:`~.store.StoreUnavailableError` (the HTTP shell answers 503).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit, urlunsplit

import asyncpg

if TYPE_CHECKING:
    from typing import TypeAlias

    from asyncpg.pool import PoolConnectionProxy

    _Conn: TypeAlias = PoolConnectionProxy[asyncpg.Record]

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

__all__ = ["CHANNEL", "MIGRATIONS", "PostgresStore", "redact_url"]

_log = logging.getLogger(__name__)

#: The schema scripts for PostgreSQL; table ``natroute_schema`` counts those applied.
MIGRATIONS: Final = migrations("postgresql")
#: The NOTIFY channel of beacon registrations.
CHANNEL: Final = "natroute_beacons"
#: Advisory lock held while migrating, so replicas starting together migrate once.
_MIGRATION_LOCK: Final = 0x6E6174726F757465  # "natroute"
_RECONNECT_MAX: Final = 30.0
_SELECT_NODE: Final = (
    f"SELECT {NODE_COLUMNS} FROM nodes n JOIN identities i ON i.node_id = n.node_id "
)
#: A batch of heartbeats (distinct node IDs, in order): each claims its
#: timestamp only when newer and only for a node with a record, then refreshes it.
_HEARTBEATS: Final = f"""
WITH beats AS (
    SELECT * FROM unnest($1::bigint[], $2::bigint[], $4::text[], $5::int[], $6::text[], $7::text[])
        AS b(node_id, ts, endpoint, relay_only, candidates, transport)
), claimed AS (
    UPDATE identities i SET last_ts_us = b.ts FROM beats b
    WHERE i.node_id = b.node_id AND i.last_ts_us < b.ts
      AND EXISTS (SELECT 1 FROM nodes WHERE node_id = b.node_id)
    RETURNING i.node_id, i.ed25519, i.created_at
)
UPDATE nodes n SET last_seen = $3, endpoint = coalesce(b.endpoint, n.endpoint),
    relay_only = coalesce(b.relay_only, n.relay_only),
    candidates = coalesce(b.candidates, n.candidates),
    transport = coalesce(b.transport, n.transport)
FROM claimed i JOIN beats b ON b.node_id = i.node_id
WHERE n.node_id = i.node_id
RETURNING {NODE_COLUMNS}
"""
#: A registration's write of the node record.
_UPSERT_NODE: Final = upsert_node([f"${i}" for i in range(1, 10)])
#: Why the heartbeats of a batch that changed nothing were refused.
_REFUSED: Final = (
    "SELECT i.node_id, i.last_ts_us, n.node_id IS NOT NULL FROM identities i "
    "LEFT JOIN nodes n ON n.node_id = i.node_id WHERE i.node_id = ANY($1::bigint[])"
)
#: What a heartbeat may change: timestamp, endpoint, relay_only, candidates, transport.
_Beat = tuple[int, str | None, int | None, str | None, str | None]
_DRIVER_ERRORS: Final = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


@contextlib.contextmanager
def _driver_errors(what: str) -> Any:
    try:
        yield
    except _DRIVER_ERRORS as exc:
        raise StoreUnavailableError(f"database {what} failed: {type(exc).__name__}: {exc}") from exc


class PostgresStore(BackendBase):
    """PostgreSQL-backed registry state; open with :meth:`open`."""

    def __init__(
        self,
        url: str,
        pool: asyncpg.Pool,
        config: StoreConfig,
        *,
        clock: Callable[[], float],
        rng: random.Random,
    ) -> None:
        super().__init__(config)
        self._url = url
        self._pool = pool
        self._clock = clock
        self._rng = rng
        self._listen_conn: asyncpg.Connection | None = None
        self._reconnect: asyncio.Task[None] | None = None
        self._closed = False
        #: Prefixes this replica's notifications, which it does not act on twice.
        self._origin = f"{secrets.token_hex(8)}:"
        self._beats: Batcher[int, _Beat, NodeRecord] = Batcher(self._heartbeats, busy=store_busy)
        self._resolves: Batcher[int, None, NodeRecord] = Batcher(
            self._resolve_batch, busy=store_busy
        )

    @classmethod
    async def open(
        cls,
        url: str,
        config: StoreConfig,
        *,
        clock: Callable[[], float],
        rng: random.Random | None = None,
    ) -> PostgresStore:
        """Connect, migrate (once across replicas) and start listening for beacon changes.

        Args:
            url: ``postgresql://user:password@host:port/database``; extra query
                parameters are server settings (e.g. ``?search_path=registry``).

        Raises:
            StoreUnavailableError: the server cannot be reached or refuses us.
            StoreError: the database was written by a newer schema.
        """
        where = redact_url(url)
        try:
            pool = await asyncpg.create_pool(
                url, min_size=1, max_size=config.pool_size, command_timeout=30
            )
        except (*_DRIVER_ERRORS, ValueError) as exc:
            raise StoreUnavailableError(f"cannot connect to {where}: {exc}") from exc
        store = cls(url, pool, config, clock=clock, rng=rng or random.SystemRandom())
        try:
            with _driver_errors("migration"):
                await store._migrate()
            await store._listen()
        except BaseException:
            await pool.close()
            raise
        return store

    @property
    def backend(self) -> str:
        """``postgresql`` (beacon-change listeners hear every replica's registrations)."""
        return "postgresql"

    async def close(self) -> None:
        """Close the listener and the pool (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for batcher in (self._beats, self._resolves):
            await batcher.close(store_closed)
        if self._reconnect is not None:
            self._reconnect.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnect
        if self._listen_conn is not None:
            with contextlib.suppress(*_DRIVER_ERRORS):
                await self._listen_conn.close()
        await self._pool.close()

    # -- plumbing -------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _conn(self, what: str) -> AsyncIterator[_Conn]:
        if self._closed:
            raise store_closed()
        with _driver_errors(what):
            async with self._pool.acquire() as conn:
                yield conn

    async def _migrate(self) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await conn.execute("CREATE TABLE IF NOT EXISTS natroute_schema (version INTEGER)")
            version = int(
                await conn.fetchval("SELECT coalesce(max(version), 0) FROM natroute_schema")
            )
            if version > len(MIGRATIONS):
                raise StoreError(
                    f"database schema {version} is newer than this code ({len(MIGRATIONS)})"
                )
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                await conn.execute(script)
                await conn.execute("DELETE FROM natroute_schema")
                await conn.execute("INSERT INTO natroute_schema (version) VALUES ($1)", number)

    async def _listen(self) -> None:
        with _driver_errors("listen"):
            conn = await asyncpg.connect(self._url)
            try:
                await conn.add_listener(CHANNEL, self._on_notify)
            except BaseException:
                await conn.close()
                raise
        conn.add_termination_listener(self._on_listener_lost)
        self._listen_conn = conn

    def _on_notify(self, conn: object, pid: int, channel: str, payload: object) -> None:
        if isinstance(payload, str) and payload.startswith(self._origin):
            return  # our own registration: its listeners were told when it committed
        self._beacons_changed()

    def _on_listener_lost(self, conn: object) -> None:
        if self._closed or self._reconnect is not None:
            return
        _log.warning("beacon_listener_lost", extra={"database": redact_url(self._url)})
        self._listen_conn = None
        self._beacons_changed()  # notifications may be missed from now on
        self._reconnect = asyncio.get_running_loop().create_task(self._listen_again())

    async def _listen_again(self) -> None:
        delay = 0.5
        while not self._closed:
            try:
                await self._listen()
            except StoreUnavailableError as exc:
                _log.debug("beacon_listener_retry", extra={"error": str(exc), "delay": delay})
                await asyncio.sleep(delay)
                delay = min(_RECONNECT_MAX, delay * 2)
                continue
            _log.info("beacon_listener_restored")
            self._beacons_changed()
            break
        self._reconnect = None

    # -- reads --------------------------------------------------------------------------

    async def ping(self) -> None:
        """Run a trivial query."""
        async with self._conn("ping") as conn:
            await conn.fetchval("SELECT 1")

    async def schema_version(self) -> int:
        """The applied migration count."""
        async with self._conn("read") as conn:
            return int(await conn.fetchval("SELECT max(version) FROM natroute_schema"))

    async def identity_key(self, node_id: int) -> bytes | None:
        """The Ed25519 public key that owns ``node_id``, if the ID was ever allocated."""
        async with self._conn("read") as conn:
            key = await conn.fetchval("SELECT ed25519 FROM identities WHERE node_id = $1", node_id)
        return None if key is None else bytes(key)

    async def identity_keys(self, limit: int) -> list[tuple[int, bytes]]:
        """See :meth:`.store.Store.identity_keys`."""
        async with self._conn("read") as conn:
            rows = await conn.fetch(
                "SELECT node_id, i.ed25519 FROM nodes n JOIN identities i USING (node_id) "
                "ORDER BY n.last_seen DESC LIMIT $1",
                limit,
            )
        return [(int(r[0]), bytes(r[1])) for r in rows]

    async def _live_node(self, where: str, arg: object, missing: str) -> NodeRecord:
        now = self._clock()
        async with self._conn("read") as conn:
            row = await conn.fetchrow(_SELECT_NODE + where, arg)
        if row is None or not is_live(float(row[8]), now, self._config.node_ttl):
            raise NodeNotFoundError(missing)
        return node_from_row(row)

    async def resolve(self, node_id: int) -> NodeRecord:
        """The live record of ``node_id``; read together with those asked meanwhile."""
        if self._closed:
            raise store_closed()
        return await self._resolves.submit(node_id, None)

    async def _resolve_batch(
        self, batch: list[tuple[int, None]]
    ) -> dict[int, NodeRecord | Exception]:
        """One query for a batch of resolves (:class:`.batching.Batcher`)."""
        now, ttl = self._clock(), self._config.node_ttl
        ids = [node_id for node_id, _ in batch]
        async with self._conn("read") as conn:
            rows = await conn.fetch(_SELECT_NODE + "WHERE n.node_id = ANY($1::bigint[])", ids)
        live = {int(row[0]): row for row in rows if is_live(float(row[8]), now, ttl)}
        return {
            node_id: node_from_row(live[node_id])
            if node_id in live
            else NodeNotFoundError(f"node {node_id} is not registered or has expired")
            for node_id in ids
        }

    async def resolve_name(self, name: str) -> NodeRecord:
        """The live record of the node called ``name``."""
        return await self._live_node("WHERE n.name = $1", name, f"no live node is called {name!r}")

    async def live_nodes(self, limit: int) -> list[NodeRecord]:
        """Up to ``limit`` live nodes, by node ID."""
        cutoff = self._clock() - self._config.node_ttl
        async with self._conn("read") as conn:
            rows = await conn.fetch(
                _SELECT_NODE + "WHERE n.last_seen >= $1 ORDER BY n.node_id LIMIT $2", cutoff, limit
            )
        return [node_from_row(row) for row in rows]

    async def live_beacons(self) -> list[BeaconRecord]:
        """Beacons registered within ``beacon_ttl``, ordered by ID."""
        cutoff = self._clock() - self._config.beacon_ttl
        async with self._conn("read") as conn:
            rows = await conn.fetch(
                "SELECT beacon_id, addr, last_seen, stream_url FROM beacons "
                "WHERE last_seen >= $1 ORDER BY beacon_id",
                cutoff,
            )
        return [BeaconRecord(int(r[0]), str(r[1]), float(r[2]), r[3]) for r in rows]

    async def live_counts(self) -> tuple[int, int]:
        """``(live nodes, live beacons)``."""
        now = self._clock()
        async with self._conn("read") as conn:
            row = await conn.fetchrow(
                "SELECT (SELECT count(*) FROM nodes WHERE last_seen >= $1), "
                "(SELECT count(*) FROM beacons WHERE last_seen >= $2)",
                now - self._config.node_ttl,
                now - self._config.beacon_ttl,
            )
        assert row is not None
        return int(row[0]), int(row[1])

    # -- writes ---------------------------------------------------------------------------

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
        async with self._conn("register") as conn:
            try:
                async with conn.transaction():
                    node_id, created = await self._identity(
                        conn, ed25519_public_key, timestamp_us, now
                    )
                    if name is not None:
                        await self._claim_name(conn, name, node_id, now)
                    fields = (x25519_public_key, endpoint, lan_addrs, relay_only, now, candidates)
                    values = registered_values(node_id, *fields, transport, name)
                    await conn.execute(_UPSERT_NODE, *values)
                    row = await conn.fetchrow(_SELECT_NODE + "WHERE n.node_id = $1", node_id)
            except asyncpg.UniqueViolationError as exc:
                if exc.constraint_name == "nodes_name":
                    raise NameTakenError(f"name {name!r} was just taken by another node") from exc
                raise
        await self._maybe_purge(now)
        assert row is not None
        return node_from_row(row), created

    async def _identity(
        self, conn: _Conn, key: bytes, timestamp_us: int, now: float
    ) -> tuple[int, bool]:
        """The key's node ID, locked for this transaction; allocated when new."""
        lock = "SELECT node_id, last_ts_us FROM identities WHERE ed25519 = $1 FOR UPDATE"
        for _ in range(ID_TRIES):
            row = await conn.fetchrow(lock, key)
            if row is not None:
                check_newer(timestamp_us, int(row[1]))
                await conn.execute(
                    "UPDATE identities SET last_ts_us = $1 WHERE node_id = $2", timestamp_us, row[0]
                )
                return int(row[0]), False
            node_id = draw_node_id(self._rng)
            inserted = await conn.fetchval(
                "INSERT INTO identities (node_id, ed25519, created_at, last_ts_us) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING node_id",
                node_id,
                key,
                now,
                timestamp_us,
            )
            if inserted is not None:
                return node_id, True
            # Either the ID is taken (draw again) or another replica has just
            # inserted this key (the next lock finds its row).
        raise IdSpaceExhaustedError("no free node ID found")

    async def _claim_name(self, conn: _Conn, name: str, node_id: int, now: float) -> None:
        row = await conn.fetchrow(
            "SELECT node_id, last_seen FROM nodes WHERE name = $1 AND node_id != $2 FOR UPDATE",
            name,
            node_id,
        )
        if row is None:
            return
        if is_live(float(row[1]), now, self._config.node_ttl):
            raise NameTakenError(f"name {name!r} is held by another live node")
        await conn.execute("UPDATE nodes SET name = NULL WHERE node_id = $1", row[0])

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
        """See :meth:`.store.Store.heartbeat`; committed together with those arriving meanwhile."""
        check_skew(timestamp_us, self._clock(), self._config.signature_skew)
        if self._closed:
            raise store_closed()
        beat = (timestamp_us, *heartbeat_values(endpoint, relay_only, candidates, transport))
        return await self._beats.submit(node_id, beat)

    async def _heartbeats(
        self, batch: list[tuple[int, _Beat]]
    ) -> dict[int, NodeRecord | Exception]:
        """One statement, one commit for a batch of heartbeats (:class:`.batching.Batcher`)."""
        batch.sort()  # row locks in ID order: two replicas' batches cannot deadlock
        ids = [node_id for node_id, _ in batch]
        columns = list(zip(*(beat for _, beat in batch), strict=True))
        async with self._conn("heartbeat") as conn:
            rows = await conn.fetch(_HEARTBEATS, ids, columns[0], self._clock(), *columns[1:])
            results: dict[int, NodeRecord | Exception] = {
                record.node_id: record for record in map(node_from_row, rows)
            }
            refused = [(node_id, beat[0]) for node_id, beat in batch if node_id not in results]
            # Rare (a replay, an expired node): a second query says why.
            why = await conn.fetch(_REFUSED, [node_id for node_id, _ in refused]) if refused else []
        last = {int(row[0]): int(row[1]) for row in why if row[2]}  # nodes with a record
        for node_id, timestamp_us in refused:
            results[node_id] = heartbeat_refusal(node_id, timestamp_us, last.get(node_id))
        return results

    async def set_relay_only_force(self, node_id: int, force: bool | None) -> NodeRecord:
        """See :meth:`.store.Store.set_relay_only_force`."""
        async with self._conn("write") as conn, conn.transaction():
            done = await conn.fetchval(
                "UPDATE nodes SET relay_only_forced = $1 WHERE node_id = $2 RETURNING node_id",
                None if force is None else int(force),
                node_id,
            )
            if done is None:
                raise NodeNotFoundError(f"node {node_id} is not registered")
            row = await conn.fetchrow(_SELECT_NODE + "WHERE n.node_id = $1", node_id)
        return node_from_row(row)

    async def delete_node(self, node_id: int) -> None:
        """See :meth:`.store.Store.delete_node`."""
        async with self._conn("write") as conn:
            done = await conn.fetchval(
                "DELETE FROM nodes WHERE node_id = $1 RETURNING node_id", node_id
            )
        if done is None:
            raise NodeNotFoundError(f"node {node_id} is not registered")

    async def register_beacon(
        self, beacon_id: int, addr: str, stream_url: str | None = None
    ) -> BeaconRecord:
        """Insert or refresh a beacon and tell every replica (``NOTIFY``)."""
        now = self._clock()
        async with self._conn("write") as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO beacons (beacon_id, addr, last_seen, stream_url) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT (beacon_id) DO UPDATE SET "
                "addr = excluded.addr, last_seen = excluded.last_seen, "
                "stream_url = excluded.stream_url",
                beacon_id,
                addr,
                now,
                stream_url,
            )
            await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, f"{self._origin}{beacon_id}")
        self._beacons_changed()
        await self._maybe_purge(now)
        return BeaconRecord(beacon_id, addr, now, stream_url)

    async def _maybe_purge(self, now: float) -> None:
        # Each replica purges at most hourly; a purge is idempotent.
        if self._purge_due(now):
            await self.purge()

    async def purge(self) -> tuple[int, int]:
        """Delete node details and beacons silent for longer than ``retention``."""
        cutoff = self._clock() - self._config.retention
        async with self._conn("purge") as conn, conn.transaction():
            nodes = await conn.fetchval(
                "WITH gone AS (DELETE FROM nodes WHERE last_seen < $1 RETURNING 1) "
                "SELECT count(*) FROM gone",
                cutoff,
            )
            beacons = await conn.fetchval(
                "WITH gone AS (DELETE FROM beacons WHERE last_seen < $1 RETURNING 1) "
                "SELECT count(*) FROM gone",
                cutoff,
            )
        return int(nodes), int(beacons)
