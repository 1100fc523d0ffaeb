"""``natroute-demo``: the demo application that runs beside a sidecar.

Every ``--interval`` seconds it sends one datagram to every other live node
(listed by the registry's operator endpoint) through its sidecar's data plane,
and it counts what arrives. Every ``--report-interval`` seconds it logs one
``demo_report`` line: its node ID, the peers it sends to, what it sent and
what it received from whom — so a person (or a test) sees which pairs deliver.

Settings: flags, env ``NATROUTE_DEMO_*`` or a config file (``--app``,
``--listen``, ``--admin-url``, ``--registry-url``, ``--registry-token``,
``--interval``, ``--report-interval``; :mod:`natroute._service.cli`). Run the
sidecar with ``--app-deliver`` set to ``--listen`` so deliveries that arrive
before the demo's first send are not dropped.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import ClassVar

import httpx
from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from natroute._service.cli import ServiceSettings, bind_failure, service_main
from natroute._service.run import wait_for_signal
from natroute._service.settings import HostPort, HttpUrl, Seconds
from natroute._service.tasks import run_until
from natroute.registry.client import AsyncRegistryClient, RegistryClientError
from natroute.routing.addr import split_host_port

from .appclient import AsyncAppClient

__all__ = ["AppSettings", "DemoSettings", "app_session", "bind_app", "main", "serve", "wait_own_id"]

_log = logging.getLogger(__name__)


@asynccontextmanager
async def app_session(
    admin_url: str, registry_url: str, registry_token: SecretStr, app: AsyncAppClient
) -> AsyncIterator[tuple[int, AsyncRegistryClient]]:
    """An application's session beside its sidecar: the node ID, once the sidecar is
    ready, and a registry client; the app's socket is open for as long as it lasts."""
    token = registry_token.get_secret_value() or None
    async with (
        httpx.AsyncClient(base_url=admin_url, timeout=3.0) as admin,
        AsyncRegistryClient(registry_url, token=token) as registry,
        app,
    ):
        yield await wait_own_id(admin), registry


async def wait_own_id(admin: httpx.AsyncClient, poll_interval: float = 0.2) -> int:
    """Wait until the sidecar behind ``admin`` is ready; return its node ID."""
    while True:
        try:
            status = (await admin.get("/v1/status")).json()
            if status.get("ready") and status.get("node_id"):
                return int(status["node_id"])
        except (httpx.HTTPError, ValueError):
            pass
        await asyncio.sleep(poll_interval)


class AppSettings(ServiceSettings):
    """What an application beside a sidecar needs (the demo's and the probe's)."""

    renamed: ClassVar[Mapping[str, str]] = {"admin": "admin_url", "bind": "listen"}

    app: HostPort = Field("127.0.0.1:4100", description="the sidecar's data plane (--app-listen)")
    listen: HostPort = Field(
        "127.0.0.1:4101", description="our UDP socket (the sidecar's --app-deliver points here)"
    )
    admin_url: HttpUrl = Field("http://127.0.0.1:8080", description="the sidecar's admin API")
    registry_url: HttpUrl = Field(
        "http://127.0.0.1:9000", description="registry base URL (the node list)"
    )
    registry_token: SecretStr = Field(SecretStr(""), description="registry operator token")


class DemoSettings(AppSettings):
    """Settings of the demo application (env ``NATROUTE_DEMO_<FIELD>``, flag ``--<field>``)."""

    model_config = SettingsConfigDict(env_prefix="NATROUTE_DEMO_")

    interval: Seconds = Field(1.0, gt=0, description="seconds between rounds of sends")
    report_interval: Seconds = Field(5.0, gt=0, description="seconds between reports")


def bind_app(settings: AppSettings) -> AsyncAppClient:
    """The application's socket on ``settings.listen``, talking to ``settings.app``.

    Raises:
        StartupError: ``listen`` cannot be bound (the message names it).
    """
    try:
        return AsyncAppClient(split_host_port(settings.app), split_host_port(settings.listen))
    except OSError as exc:
        raise bind_failure(type(settings), "listen", settings.listen, exc) from exc


class Demo:
    """Sends to every peer each round; counts what comes back."""

    def __init__(self, settings: DemoSettings) -> None:
        self.settings = settings
        self.app = bind_app(settings)
        self.node_id = 0
        self.peers: list[int] = []
        self.sent = 0
        self.received: Counter[int] = Counter()

    async def refresh_peers(self, registry: AsyncRegistryClient) -> None:
        """The live nodes other than us."""
        try:
            nodes = await registry.nodes()
        except RegistryClientError as exc:
            _log.warning("demo_registry_failed", extra={"error": str(exc)})
            return
        self.peers = [n.node_id for n in nodes if n.node_id != self.node_id]

    async def send_loop(self, registry: AsyncRegistryClient) -> None:
        seq = 0
        while True:
            if seq % 5 == 0:
                await self.refresh_peers(registry)
            for peer in self.peers:
                payload = f"demo {self.node_id} -> {peer} #{seq} {time.time():.3f}".encode()
                await self.app.send(peer, payload)
                self.sent += 1
            seq += 1
            await asyncio.sleep(self.settings.interval)

    async def recv_loop(self) -> None:
        while True:
            src, _ = await self.app.recv()
            self.received[src] += 1

    async def report_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.report_interval)
            _log.info(
                "demo_report",
                extra={
                    "node_id": self.node_id,
                    "peers": self.peers,
                    "sent": self.sent,
                    "received": {str(k): v for k, v in sorted(self.received.items())},
                    "heard_from": len(self.received),
                },
            )

    async def run(self, until: Awaitable[object]) -> None:
        """Send, receive and report until ``until`` completes."""
        s = self.settings
        async with app_session(s.admin_url, s.registry_url, s.registry_token, self.app) as session:
            self.node_id, registry = session
            _log.info("demo_started", extra={"node_id": self.node_id, "app": s.app})
            await run_until(until, self.send_loop(registry), self.recv_loop(), self.report_loop())


async def serve(settings: DemoSettings) -> None:
    """Run the demo until SIGINT or SIGTERM.

    Raises:
        StartupError: its socket cannot be bound.
    """
    await Demo(settings).run(wait_for_signal())


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point; 2 for settings that cannot be used."""
    return service_main(
        DemoSettings,
        argv,
        prog="natroute-demo",
        description="natroute demo: sends to every live node through its sidecar and "
        "reports what arrives from whom.",
        serve=serve,
    )


if __name__ == "__main__":
    sys.exit(main())
