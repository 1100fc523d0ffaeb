"""The registry's schema, written once for SQLite and PostgreSQL.

Each migration is one SQL script in the subset both databases share, with
four type placeholders that :func:`migrations` fills per dialect (node IDs
reach 2**32-1, beyond PostgreSQL's ``INTEGER``). Booleans are stored as
``INTEGER`` 0/1 in both, lists as JSON text. Both backends apply the same
scripts in order and record how many ran (SQLite ``PRAGMA user_version``,
PostgreSQL the table ``natroute_schema``); ``tests/registry/test_schema.py``
introspects both live databases and checks their tables, columns, keys and
indexes stay equal. A migration is never edited once released: a change is a
new script at the end.
"""

from __future__ import annotations

from typing import Final, Literal

__all__ = ["Dialect", "migrations"]

Dialect = Literal["sqlite", "postgresql"]

_TYPES: Final[dict[str, dict[str, str]]] = {
    "sqlite": {"id": "INTEGER", "int64": "INTEGER", "real": "REAL", "bytes": "BLOB"},
    "postgresql": {"id": "BIGINT", "int64": "BIGINT", "real": "DOUBLE PRECISION", "bytes": "BYTEA"},
}

_MIGRATIONS: Final[tuple[str, ...]] = (
    # 1: identities (never deleted: the key -> ID map), node details, beacons.
    """
    CREATE TABLE identities (
        node_id     {id}    PRIMARY KEY,
        ed25519     {bytes} NOT NULL UNIQUE,
        created_at  {real}  NOT NULL,
        last_ts_us  {int64} NOT NULL DEFAULT 0
    );
    CREATE TABLE nodes (
        node_id           {id}    PRIMARY KEY REFERENCES identities(node_id),
        x25519            {bytes},
        endpoint          TEXT,
        lan_addrs         TEXT    NOT NULL,
        relay_only        INTEGER NOT NULL,
        relay_only_forced INTEGER,
        last_seen         {real}  NOT NULL
    );
    CREATE INDEX nodes_last_seen ON nodes(last_seen);
    CREATE TABLE beacons (
        beacon_id {id}   PRIMARY KEY,
        addr      TEXT   NOT NULL,
        last_seen {real} NOT NULL
    );
    CREATE INDEX beacons_last_seen ON beacons(last_seen);
    """,
    # 2: candidates, transport and name of a node; a beacon's stream URL.
    """
    ALTER TABLE nodes ADD COLUMN candidates TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE nodes ADD COLUMN transport TEXT NOT NULL DEFAULT 'udp';
    ALTER TABLE nodes ADD COLUMN name TEXT;
    CREATE UNIQUE INDEX nodes_name ON nodes(name) WHERE name IS NOT NULL;
    ALTER TABLE beacons ADD COLUMN stream_url TEXT;
    """,
)


def migrations(dialect: Dialect) -> tuple[str, ...]:
    """Every migration script, in order, for ``dialect``."""
    types = _TYPES[dialect]
    return tuple(script.format(**types) for script in _MIGRATIONS)
