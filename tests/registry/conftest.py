"""Fixtures for the registry tests: a fake wall clock, settings, the app.

API tests drive ``create_app(settings, clock=FakeClock)`` through httpx's
``ASGITransport`` with SQLite under ``tmp_path``; the sync client is tested
against a real uvicorn on 127.0.0.1 port 0 (see ``serve_app``).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import uvicorn
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI

from natroute._service.run import bind_tcp
from natroute.registry.app import create_app
from natroute.registry.client import AsyncRegistryClient
from natroute.registry.settings import Settings

TOKEN = "test-operator-token-0123456789"
START = 1_800_000_000.0


class FakeClock:
    """Wall clock in Unix seconds that only moves when the test says so."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings for tests: a real token, the DB under ``tmp_path``."""
    values: dict[str, Any] = {"db": tmp_path / "registry.db", "token": TOKEN}
    values.update(overrides)
    return Settings(**values)


@contextmanager
def app_for(settings: Settings, clock: FakeClock) -> Iterator[FastAPI]:
    """An app whose store is closed afterwards (ASGITransport runs no lifespan)."""
    app = create_app(settings, clock=clock, rng=random.Random(7))
    try:
        yield app
    finally:
        app.state.store.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def app(settings: Settings, clock: FakeClock) -> Iterator[FastAPI]:
    with app_for(settings, clock) as built:
        yield built


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
    """Run ``app`` on a real uvicorn bound to 127.0.0.1 port 0; yields the base URL."""
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
