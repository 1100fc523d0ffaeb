"""The demo application against live sidecars with their admin APIs, on loopback."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from natroute._service.run import EmbeddedHttpServer
from natroute.registry.settings import DEV_TOKEN
from natroute.routing.addr import format_addr
from natroute.sidecar.admin import create_app
from natroute.sidecar.demo import Demo, DemoSettings, main
from natroute.sidecar.service import Sidecar
from natroute.sidecar.testing import Stack, running_sidecar, running_stack

from .helpers import node_id, wait_for


@contextlib.asynccontextmanager
async def demo_beside(stack: Stack, name: str) -> AsyncIterator[tuple[Sidecar, Demo]]:
    """A sidecar with its admin API and a demo app delivering to a fixed port."""
    demo_settings = DemoSettings(
        registry_url=stack.registry_url,
        registry_token=DEV_TOKEN,
        listen="127.0.0.1:0",
        interval=0.1,
        report_interval=0.2,
    )
    demo = Demo(demo_settings)
    bound = demo.app.sock.getsockname()
    settings = stack.sidecar_settings(name, app_deliver=format_addr((bound[0], bound[1])))
    async with running_sidecar(settings) as sidecar:
        http = EmbeddedHttpServer(create_app(sidecar))
        host, port = await http.start("127.0.0.1:0")
        assert sidecar.app_addr is not None
        demo.settings = demo_settings.model_copy(
            update={"admin_url": f"http://{host}:{port}", "app": format_addr(sidecar.app_addr)}
        )
        demo.app.sidecar = sidecar.app_addr
        try:
            yield sidecar, demo
        finally:
            await http.stop()


@pytest.mark.asyncio
async def test_demo_apps_send_to_every_peer_and_count_deliveries(tmp_path: Path) -> None:
    async with (
        running_stack(tmp_path) as stack,
        demo_beside(stack, "a") as (a, demo_a),
        demo_beside(stack, "b") as (b, demo_b),
        demo_beside(stack, "c") as (c, demo_c),
    ):
        stop = asyncio.Event()
        demos = (demo_a, demo_b, demo_c)
        tasks = [asyncio.create_task(d.run(stop.wait())) for d in demos]
        try:
            await wait_for(
                lambda: all(len(d.received) == 2 and min(d.received.values()) >= 3 for d in demos),
                "every demo to hear from both others",
                15,
            )
        finally:
            stop.set()
            await asyncio.gather(*tasks)
        assert demo_a.node_id == node_id(a)
        assert sorted(demo_a.peers) == sorted([node_id(b), node_id(c)])
        assert set(demo_b.received) == {node_id(a), node_id(c)}


def test_demo_main_refuses_bad_settings() -> None:
    assert main(["--interval", "0"]) == 2
