"""The status page in a real headless browser: it renders, updates in place, expands a peer."""

from __future__ import annotations

from pathlib import Path

import pytest

from natroute._service.run import EmbeddedHttpServer
from natroute.sidecar.admin import create_app
from natroute.sidecar.testing import running_sidecar, running_stack

from .browser import chromium_or_skip, headless_page
from .helpers import Pump, node_id

pytestmark = pytest.mark.timeout(90)

_ROWS = "Array.from(document.querySelectorAll('#peers tr.peer')).map(r => r.textContent)"


@pytest.mark.asyncio
async def test_the_page_renders_and_follows_the_sidecar_live(tmp_path: Path) -> None:
    chromium_or_skip()
    async with (
        running_stack(tmp_path) as stack,
        running_sidecar(stack.sidecar_settings("a")) as a,
        running_sidecar(stack.sidecar_settings("b")) as b,
    ):
        async with Pump(a, b) as pump:
            await pump.delivered(3, limit=10)
        server = EmbeddedHttpServer(create_app(a))
        host, port = await server.start("127.0.0.1:0")
        try:
            async with headless_page(f"http://{host}:{port}/", tmp_path / "profile") as page:
                rows = await page.wait_for(f"{_ROWS}.length === 1 && {_ROWS}")
                assert str(node_id(b)) in rows[0]
                assert "direct" in rows[0]
                assert "checked" in rows[0]
                title = await page.evaluate("document.getElementById('title').textContent")
                assert title == f"natroute sidecar {node_id(a)} (ready)"
                cards = await page.evaluate("document.getElementById('cards').textContent")
                assert "NAT and transport" in cards
                assert "udp" in cards
                await page.evaluate("window.sameDocument = true")

                # the sidecar changes: the page follows without a reload
                a.engine.set_relay(node_id(b), True, True, a.clock())
                a.flush()
                await page.wait_for(f"{_ROWS}.some(t => t.includes('operator'))")
                assert await page.evaluate("window.sameDocument === true")
                stamp = await page.evaluate("document.getElementById('updated').textContent")
                assert stamp.startswith("updated ")

                # a click shows the peer's candidates and path history
                await page.evaluate("document.querySelector('#peers tr.peer').click()")
                detail = await page.wait_for(
                    "document.querySelector('#peers tr.details')?.textContent"
                )
                assert "path history" in detail
                assert "candidates" in detail
                assert "operator" in detail
                sparkline = await page.evaluate(
                    "document.querySelectorAll('#peers svg.spark').length"
                )
                assert sparkline == 1
        finally:
            await server.stop()
