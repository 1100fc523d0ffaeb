"""Opening the configured store: SQLite at ``db``, or PostgreSQL at ``database_url``."""

from __future__ import annotations

import random
from collections.abc import Callable

from .postgres import PostgresStore
from .settings import Settings
from .sqlite import SqliteStore
from .store import Store, StoreConfig

__all__ = ["open_store", "store_config"]


def store_config(settings: Settings) -> StoreConfig:
    """The store tunables the settings ask for."""
    return StoreConfig(
        node_ttl=settings.node_ttl,
        beacon_ttl=settings.beacon_ttl,
        retention=settings.retention,
        signature_skew=settings.signature_skew,
        synchronous=settings.sqlite_synchronous,
        pool_size=settings.database_pool_size,
    )


async def open_store(
    settings: Settings, *, clock: Callable[[], float], rng: random.Random | None = None
) -> Store:
    """Open (and migrate) the store the settings select.

    Raises:
        StoreUnavailableError: the database cannot be opened or reached.
        StoreError: the database has a newer schema than this code.
    """
    url = settings.postgres_url()
    if url is not None:
        return await PostgresStore.open(url, store_config(settings), clock=clock, rng=rng)
    return SqliteStore(settings.db, store_config(settings), clock=clock, rng=rng)
