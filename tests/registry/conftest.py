"""Fixtures for the registry tests: both storage backends, a fake wall clock, the app.

Every test that takes ``settings`` (directly or through ``store``, ``app``,
``http``, ``registry``) runs twice: on SQLite under ``tmp_path`` and on a
real PostgreSQL server, in a schema of its own that is dropped afterwards.
The server's URL comes from ``NATROUTE_TEST_POSTGRES_URL`` (``.ci/run`` sets
it from ``.ci/postgres-setup``); without a reachable server the PostgreSQL
runs skip with the reason, except under ``CI=true``, where they fail.

API tests drive ``create_app(settings, store=..., clock=FakeClock)`` through
httpx's ``ASGITransport``; the sync client runs against a real uvicorn on
127.0.0.1 port 0 (see ``serve_app``) whose lifespan opens the store.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
import pytest_asyncio
import uvicorn
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI

from natroute._service.run import bind_tcp
from natroute.registry.app import create_app
from natroute.registry.backends import open_store
from natroute.registry.client import AsyncRegistryClient
from natroute.registry.settings import Settings
from natroute.registry.store import Store
from tests.ci import missing
from tests.internet import FakeClock

__all__ = [
    "BACKENDS",
    "SQLITE_ONLY",
    "START",
    "TOKEN",
    "FakeClock",
    "app_with",
    "make_settings",
    "serve_app",
]

TOKEN: Final = "test-operator-token-0123456789"
START: Final = 1_800_000_000.0
BACKENDS: Final = ("sqlite", "postgresql")
POSTGRES_ENV: Final = "NATROUTE_TEST_POSTGRES_URL"
#: For tests of what is refused before any store call (validation, auth): the
#: backend cannot matter, so they run on SQLite only.
SQLITE_ONLY: Final = pytest.mark.parametrize("backend", ["sqlite"])


def make_settings(tmp_path: Path, database_url: str | None = None, **overrides: Any) -> Settings:
    """Settings for tests: a real token, SQLite under ``tmp_path`` or ``database_url``."""
    values: dict[str, Any] = {"db": tmp_path / "registry.db", "token": TOKEN}
    if database_url is not None:
        values["database_url"] = database_url
    values.update(overrides)
    return Settings(**values)


def _with_schema(url: str, schema: str) -> str:
    parts = urlsplit(url)
    query = f"{parts.query}&search_path={schema}" if parts.query else f"search_path={schema}"
    return urlunsplit(parts._replace(query=query))


async def _admin(url: str, statement: str) -> None:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The test server's URL; skips (fails under ``CI=true``) when there is none."""
    url = os.environ.get(POSTGRES_ENV, "")
    reason = ""
    if not url:
        reason = (
            f"{POSTGRES_ENV} is not set (run: export {POSTGRES_ENV}=$(bash .ci/postgres-setup))"
        )
    else:
        try:
            asyncio.run(_admin(url, "SELECT 1"))
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            reason = f"no PostgreSQL answers at {POSTGRES_ENV}: {type(exc).__name__}: {exc}"
    if reason:
        missing(reason)
    return url


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A URL whose ``search_path`` is a fresh schema, dropped after the test."""
    schema = f"t_{secrets.token_hex(6)}"
    asyncio.run(_admin(postgres_server, f"CREATE SCHEMA {schema}"))
    try:
        yield _with_schema(postgres_server, schema)
    finally:
        asyncio.run(_admin(postgres_server, f"DROP SCHEMA {schema} CASCADE"))


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """``sqlite`` or ``postgresql``: every test using it runs on both."""
    name: str = request.param
    return name


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest) -> str | None:
    """``None`` for SQLite, else a PostgreSQL URL with a schema of its own."""
    if backend == "sqlite":
        return None
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def settings(tmp_path: Path, database_url: str | None) -> Settings:
    return make_settings(tmp_path, database_url)


@pytest_asyncio.fixture
async def store(settings: Settings, clock: FakeClock) -> AsyncIterator[Store]:
    """The configured store, opened with the fake clock, closed afterwards."""
    opened = await open_store(settings, clock=clock, rng=random.Random(7))
    try:
        yield opened
    finally:
        await opened.close()


@pytest_asyncio.fixture
async def app(settings: Settings, store: Store, clock: FakeClock) -> FastAPI:
    return create_app(settings, store=store, clock=clock)


@asynccontextmanager
async def app_with(settings: Settings, clock: FakeClock) -> AsyncIterator[FastAPI]:
    """An app on its own store (closed afterwards), for tests with special settings."""
    opened = await open_store(settings, clock=clock, rng=random.Random(7))
    try:
        yield create_app(settings, store=opened, clock=clock)
    finally:
        await opened.close()


@pytest_asyncio.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A raw httpx client on the app (for malformed requests)."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://registry") as client:
        yield client


@pytest_asyncio.fixture
async def registry(app: FastAPI, clock: FakeClock) -> AsyncIterator[AsyncRegistryClient]:
    """The async client, signing with the fake clock, holding the operator token."""
    transport = httpx.ASGITransport(app=app)
    async with AsyncRegistryClient(
        "http://registry", token=TOKEN, transport=transport, clock=clock
    ) as client:
        yield client


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@contextmanager
def serve_app(app: FastAPI) -> Iterator[str]:
    """Run ``app`` (lifespan on) on a real uvicorn at 127.0.0.1 port 0; yields the base URL."""
    sock = bind_tcp("127.0.0.1:0")
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_config=None, access_log=False, ws="none", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive(), "uvicorn stopped"
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture
def served(settings: Settings, clock: FakeClock) -> Iterator[str]:
    """A registry on a real uvicorn (its lifespan opens and closes the store)."""
    with serve_app(create_app(settings, clock=clock, rng=random.Random(7))) as url:
        yield url
