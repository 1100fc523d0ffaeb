"""``natroute-demo``: the demo application that runs beside a sidecar.

Every ``--interval`` seconds it sends one datagram to every other live node
(listed by the registry's operator endpoint) through its sidecar's data plane,
and it counts what arrives. Every ``--report-interval`` seconds it logs one
``demo_report`` line: its node ID, the peers it sends to, what it sent and
what it received from whom — so a person (or a test) sees which pairs deliver.

Settings: env ``NATROUTE_DEMO_*`` or flags (``--app``, ``--bind``, ``--admin``,
``--registry-url``, ``--registry-token``, ``--interval``, ``--report-interval``).
Run the sidecar with ``--app-deliver`` set to ``--bind`` so deliveries that
arrive before the demo's first send are not dropped.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager

import httpx
from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, CliApp, SettingsConfigDict

from natroute._service.logging import configure_logging
from natroute._service.run import run, wait_for_signal
from natroute._service.tasks import run_until
from natroute.registry.client import AsyncRegistryClient, RegistryClientError
from natroute.routing.addr import split_host_port

from .appclient import AsyncAppClient

__all__ = ["DemoSettings", "app_session", "main", "wait_own_id"]

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


class DemoSettings(BaseSettings):
    """Settings of the demo application. Env: ``NATROUTE_DEMO_<FIELD>``."""

    model_config = SettingsConfigDict(
        env_prefix="NATROUTE_DEMO_",
        extra="ignore",
        cli_kebab_case=True,
        cli_prog_name="natroute-demo",
    )

    app: str = Field("127.0.0.1:4100", description="the sidecar's data plane")
    bind: str = Field(
        "127.0.0.1:4101", description="our address (the sidecar's --app-deliver points here)"
    )
    admin: str = Field("http://127.0.0.1:8080", description="the sidecar's admin API")
    registry_url: str = Field("http://127.0.0.1:9000", description="registry (node list)")
    registry_token: SecretStr = Field(SecretStr(""), description="registry operator token")
    interval: float = Field(1.0, gt=0, description="seconds between rounds of sends")
    report_interval: float = Field(5.0, gt=0, description="seconds between reports")
    log_level: str = "info"


class Demo:
    """Sends to every peer each round; counts what comes back."""

    def __init__(self, settings: DemoSettings) -> None:
        self.settings = settings
        self.app = AsyncAppClient(split_host_port(settings.app), split_host_port(settings.bind))
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
        async with app_session(s.admin, s.registry_url, s.registry_token, self.app) as session:
            self.node_id, registry = session
            _log.info("demo_started", extra={"node_id": self.node_id, "app": s.app})
            await run_until(until, self.send_loop(registry), self.recv_loop(), self.report_loop())


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point; 2 for invalid settings."""
    try:
        settings = CliApp.run(DemoSettings, cli_args=list(sys.argv[1:] if argv is None else argv))
    except ValidationError as exc:
        print(f"natroute-demo: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    run(Demo(settings).run(wait_for_signal()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
