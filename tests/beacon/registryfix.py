"""A real registry app in-process (SQLite under a temp dir), for beacon tests that need one.

``in_process_registry(tmp_path)`` yields an :class:`InProcessRegistry`: an
``httpx.AsyncClient`` on the app (give it to ``running_beacon(http_client=...)``
with ``registry_url=REGISTRY_URL``) and the registry's own async client (to
register nodes the way sidecars do).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from natroute.registry.app import create_app
from natroute.registry.client import AsyncRegistryClient
from natroute.registry.settings import Settings

__all__ = ["REGISTRY_TOKEN", "REGISTRY_URL", "InProcessRegistry", "in_process_registry"]

REGISTRY_URL = "http://registry.test"
REGISTRY_TOKEN = "zq7-beacon-test-token-4f9c2a81"


@dataclass
class InProcessRegistry:
    """The beacon's HTTP client on the registry app, and a node-side client."""

    http: httpx.AsyncClient
    client: AsyncRegistryClient

    async def register_node(self, key: Ed25519PrivateKey) -> int:
        """Register a node with ``key`` (as a sidecar does); returns its node ID."""
        return (await self.client.register(key)).node_id


@asynccontextmanager
async def in_process_registry(tmp_path: Path) -> AsyncIterator[InProcessRegistry]:
    """A registry app with its database under ``tmp_path``."""
    app = create_app(Settings(db=tmp_path / "registry.db", token=REGISTRY_TOKEN))
    transport = httpx.ASGITransport(app=app)
    try:
        async with (
            httpx.AsyncClient(transport=transport, base_url=REGISTRY_URL, timeout=5.0) as http,
            AsyncRegistryClient(REGISTRY_URL, token=REGISTRY_TOKEN, transport=transport) as client,
        ):
            yield InProcessRegistry(http, client)
    finally:
        store = app.state.services.store
        if store is not None:
            await store.close()
