"""One schema, two databases: the tables both backends build must stay equal,
and a database written by the first schema migrates with its data."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from natroute.registry.backends import open_store
from natroute.registry.postgres import MIGRATIONS as PG_MIGRATIONS
from natroute.registry.settings import Settings
from natroute.registry.sqlite import MIGRATIONS as SQLITE_MIGRATIONS

from .conftest import FakeClock, make_settings

pytestmark = pytest.mark.asyncio

Schema = dict[str, Any]
_TYPES = {
    "integer": "int",
    "bigint": "int",
    "real": "float",
    "double precision": "float",
    "blob": "bytes",
    "bytea": "bytes",
    "text": "text",
}


def _default(value: str | None) -> str | None:
    return None if value is None else value.removesuffix("::text")


def _sqlite_schema(path: Path) -> Schema:
    db = sqlite3.connect(path)
    try:
        tables = [
            r[0]
            for r in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        schema: Schema = {"columns": {}, "unique": set(), "indexes": {}, "foreign": set()}
        for table in tables:
            for _, name, kind, notnull, default, pk in db.execute(f"PRAGMA table_info({table})"):
                schema["columns"][(table, name)] = (
                    _TYPES[kind.lower()],
                    bool(notnull or pk),
                    _default(default),
                    bool(pk),
                )
            for _, index, unique, origin, partial in db.execute(f"PRAGMA index_list({table})"):
                columns = tuple(r[2] for r in db.execute(f"PRAGMA index_info({index})"))
                if origin == "u":
                    schema["unique"].add((table, columns))
                elif origin == "c":
                    schema["indexes"][index] = (table, columns, bool(unique), bool(partial))
            for row in db.execute(f"PRAGMA foreign_key_list({table})"):
                schema["foreign"].add((table, row[3], row[2], row[4]))
        return schema
    finally:
        db.close()


async def _postgres_schema(url: str) -> Schema:
    conn = await asyncpg.connect(url)
    try:
        schema: Schema = {"columns": {}, "unique": set(), "indexes": {}, "foreign": set()}
        keys = {
            (r["table_name"], r["column_name"])
            for r in await conn.fetch(
                "SELECT k.table_name, k.column_name FROM information_schema.table_constraints c "
                "JOIN information_schema.key_column_usage k "
                "USING (constraint_schema, constraint_name) "
                "WHERE c.constraint_type = 'PRIMARY KEY' AND c.table_schema = current_schema()"
            )
        }
        for r in await conn.fetch(
            "SELECT table_name, column_name, data_type, is_nullable, column_default "
            "FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name != 'natroute_schema'"
        ):
            where = (r["table_name"], r["column_name"])
            schema["columns"][where] = (
                _TYPES[r["data_type"]],
                r["is_nullable"] == "NO",
                _default(r["column_default"]),
                where in keys,
            )
        for r in await conn.fetch(
            "SELECT k.table_name, k.column_name FROM information_schema.table_constraints c "
            "JOIN information_schema.key_column_usage k "
            "USING (constraint_schema, constraint_name) "
            "WHERE c.constraint_type = 'UNIQUE' AND c.table_schema = current_schema()"
        ):
            schema["unique"].add((r["table_name"], (r["column_name"],)))
        for r in await conn.fetch(
            "SELECT i.relname AS index, t.relname AS table, x.indisunique AS unique, "
            "x.indpred IS NOT NULL AS partial, "
            "array(SELECT a.attname FROM unnest(x.indkey) WITH ORDINALITY k(n, o) "
            "JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.n ORDER BY k.o) AS columns "
            "FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
            "JOIN pg_class t ON t.oid = x.indrelid "
            "WHERE t.relnamespace = current_schema()::regnamespace "
            "AND NOT x.indisprimary AND NOT EXISTS "
            "(SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)"
        ):
            schema["indexes"][r["index"]] = (
                r["table"],
                tuple(r["columns"]),
                r["unique"],
                r["partial"],
            )
        for r in await conn.fetch(
            "SELECT tc.table_name, kcu.column_name, ccu.table_name AS ref_table, "
            "ccu.column_name AS ref_column FROM information_schema.table_constraints tc "
            "JOIN information_schema.key_column_usage kcu "
            "USING (constraint_schema, constraint_name) "
            "JOIN information_schema.constraint_column_usage ccu "
            "USING (constraint_schema, constraint_name) "
            "WHERE tc.constraint_type = 'FOREIGN KEY' AND tc.table_schema = current_schema()"
        ):
            schema["foreign"].add(
                (r["table_name"], r["column_name"], r["ref_table"], r["ref_column"])
            )
        return schema
    finally:
        await conn.close()


async def test_both_backends_build_the_same_schema(
    tmp_path: Path, postgres_url: str, clock: FakeClock
) -> None:
    for url in (None, postgres_url):
        store = await open_store(make_settings(tmp_path, url), clock=clock)
        await store.close()
    sqlite = _sqlite_schema(tmp_path / "registry.db")
    postgres = await _postgres_schema(postgres_url)
    assert sqlite == postgres
    # And the comparison sees what matters (it is not comparing two empty sets).
    assert ("nodes", "name") in sqlite["columns"]
    assert sqlite["indexes"]["nodes_name"] == ("nodes", ("name",), True, True)
    assert ("identities", ("ed25519",)) in sqlite["unique"]
    assert ("nodes", "node_id", "identities", "node_id") in sqlite["foreign"]
    assert len(SQLITE_MIGRATIONS) == len(PG_MIGRATIONS)


async def _write_v1(settings: Settings) -> None:
    """A database as the first schema left it, with one node and one beacon."""
    node = (7, b"k" * 32, 1.0e9, 5)
    details = (7, None, "203.0.113.7:4000", '["10.0.0.7:4000"]', 1, None, 1_800_000_000.0)
    beacon = (3, "203.0.113.3:9001", 1_800_000_000.0)
    url = settings.postgres_url()
    if url is None:
        db = sqlite3.connect(settings.db)
        db.executescript(SQLITE_MIGRATIONS[0] + "\nPRAGMA user_version=1;")
        db.execute("INSERT INTO identities VALUES (?, ?, ?, ?)", node)
        db.execute("INSERT INTO nodes VALUES (?, ?, ?, ?, ?, ?, ?)", details)
        db.execute("INSERT INTO beacons VALUES (?, ?, ?)", beacon)
        db.commit()
        db.close()
        return
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(PG_MIGRATIONS[0])
        await conn.execute("CREATE TABLE natroute_schema (version INTEGER)")
        await conn.execute("INSERT INTO natroute_schema VALUES (1)")
        await conn.execute("INSERT INTO identities VALUES ($1, $2, $3, $4)", *node)
        await conn.execute("INSERT INTO nodes VALUES ($1, $2, $3, $4, $5, $6, $7)", *details)
        await conn.execute("INSERT INTO beacons VALUES ($1, $2, $3)", *beacon)
    finally:
        await conn.close()


async def test_first_schema_migrates_with_its_data(settings: Settings, clock: FakeClock) -> None:
    await _write_v1(settings)
    store = await open_store(settings, clock=clock)
    try:
        assert await store.schema_version() == len(SQLITE_MIGRATIONS)
        node = await store.resolve(7)
        assert (node.endpoint, node.lan_addrs, node.relay_only) == (
            "203.0.113.7:4000",
            ("10.0.0.7:4000",),
            True,
        )
        assert (node.candidates, node.transport, node.name) == ((), "udp", None)
        assert [(b.beacon_id, b.stream_url) for b in await store.live_beacons()] == [(3, None)]
    finally:
        await store.close()
