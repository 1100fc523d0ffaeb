"""Test helpers: a whole natroute world on loopback, in-process.

``running_stack`` starts a registry (SQLite under a directory, dev token)
and beacons that register with it; ``running_sidecar`` starts a sidecar
against them. Everything binds 127.0.0.1 port 0::

    async with running_stack(tmp_path, beacons=2) as stack:
        async with running_sidecar(stack.sidecar_settings("a")) as a:
            ...
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from natroute._service.run import EmbeddedHttpServer
from natroute.beacon.service import BeaconService
from natroute.beacon.testing import running_beacon
from natroute.registry.app import create_app as create_registry_app
from natroute.registry.settings import DEV_TOKEN
from natroute.registry.settings import Settings as RegistrySettings
from natroute.routing.addr import format_addr

from .service import Sidecar
from .settings import Settings

__all__ = ["Stack", "running_registry", "running_sidecar", "running_stack"]


@asynccontextmanager
async def running_registry(directory: Path, **overrides: Any) -> AsyncIterator[str]:
    """A registry in dev mode on 127.0.0.1:0; yields its base URL."""
    fields: dict[str, Any] = {"dev": True, "db": directory / "registry.db", "log_level": "debug"}
    fields.update(overrides)
    server = EmbeddedHttpServer(create_registry_app(RegistrySettings(**fields)))
    host, port = await server.start("127.0.0.1:0")
    try:
        yield f"http://{host}:{port}"
    finally:
        await server.stop()


@dataclass
class Stack:
    """A running registry and beacons, and a directory for sidecar identities."""

    directory: Path
    registry_url: str
    beacons: list[BeaconService] = field(default_factory=list)

    @property
    def beacon_addrs(self) -> list[str]:
        """``host:port`` of every beacon."""
        return [format_addr(b.udp_addr) for b in self.beacons]

    def sidecar_settings(self, name: str, **overrides: Any) -> Settings:
        """Loopback settings for a sidecar called ``name`` (fast timers for tests)."""
        fields: dict[str, Any] = {
            "listen": "127.0.0.1:0",
            "app_listen": "127.0.0.1:0",
            "http_listen": "off",
            "identity": str(self.directory / name / "identity.json"),
            "name": name,
            "registry_url": self.registry_url,
            "beacons": ",".join(self.beacon_addrs),
            "refresh_jitter": 0.0,
            "discover_timeout": 1.0,
            "tick_interval": 0.1,
            "log_level": "debug",
        }
        fields.update(overrides)
        return Settings(**fields)


@asynccontextmanager
async def running_stack(
    directory: Path, *, beacons: int = 1, advertise_host: str = "", **beacon_overrides: Any
) -> AsyncIterator[Stack]:
    """A registry plus ``beacons`` beacons registered with it (IDs 1, 2, ...).

    With ``advertise_host`` (e.g. ``"localhost"``) beacons register as
    ``host:port``: a name survives ``filter_unreachable``, where a loopback
    literal would not, so the registry's list and the beacon cache are used.
    """
    async with contextlib.AsyncExitStack() as stack:
        url = await stack.enter_async_context(running_registry(directory))
        world = Stack(directory, url)
        for i in range(beacons):
            fields: dict[str, Any] = {
                "beacon_id": i + 1,
                "registry_url": url,
                "registry_token": DEV_TOKEN,
                "register_interval": 30.0,
            }
            fields.update(beacon_overrides)
            world.beacons.append(await stack.enter_async_context(running_beacon(**fields)))
        for beacon in world.beacons:
            if advertise_host:
                beacon.advertise = f"{advertise_host}:{beacon.udp_addr[1]}"
            await beacon.refresh_peers()
        yield world


@asynccontextmanager
async def running_sidecar(settings: Settings) -> AsyncIterator[Sidecar]:
    """A started sidecar; stopped on exit."""
    sidecar = Sidecar(settings)
    try:
        await sidecar.start()
        yield sidecar
    finally:
        await sidecar.stop()
