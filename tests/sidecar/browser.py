"""A real headless browser for the status page test: Debian's chromium over DevTools.

:func:`headless_page` starts ``chromium --headless`` on one URL with remote
debugging on an ephemeral loopback port, and yields a :class:`Page` whose
:meth:`Page.evaluate` runs JavaScript in it through the DevTools protocol
(a WebSocket, with the ``websockets`` library the project already uses). The
browser is started with the flags a closed network needs and is killed on
exit. Without chromium the test skips, except under ``CI=true``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.ci import missing

__all__ = ["Page", "chromium_or_skip", "headless_page"]

_LISTENING = re.compile(r"DevTools listening on (ws://127\.0\.0\.1:(\d+)/\S+)")


def chromium_or_skip() -> str:
    """The chromium binary; skips the test without one (fails under CI=true)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        reason = "no chromium (apt-get install chromium; .ci/run installs it)"
        missing(reason)
    return found


class Page:
    """One browser tab, driven through the DevTools protocol."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._next = 0

    async def evaluate(self, expression: str) -> Any:
        """The value of ``expression`` evaluated in the page (awaited if a promise)."""
        self._next += 1
        call = {
            "id": self._next,
            "method": "Runtime.evaluate",
            "params": {"expression": expression, "returnByValue": True, "awaitPromise": True},
        }
        await self._ws.send(json.dumps(call))
        while True:
            answer = json.loads(await self._ws.recv())
            if answer.get("id") == self._next:
                break
        result = answer["result"]
        if "exceptionDetails" in result:
            raise AssertionError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, limit: float = 10.0) -> Any:
        """Evaluate until the value is truthy; fails the test after ``limit`` seconds."""
        try:
            async with asyncio.timeout(limit):
                while True:
                    value = await self.evaluate(expression)
                    if value:
                        return value
                    await asyncio.sleep(0.1)
        except TimeoutError:
            pytest.fail(f"the page never showed: {expression}")


@contextlib.asynccontextmanager
async def headless_page(url: str, profile: Path) -> AsyncIterator[Page]:
    """A headless chromium showing ``url``; killed on exit."""
    binary = chromium_or_skip()
    proc = await asyncio.create_subprocess_exec(
        binary,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
        url,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        port = 0
        async with asyncio.timeout(30):
            while not port:
                line = (await proc.stderr.readline()).decode(errors="replace")
                if not line:
                    raise AssertionError("chromium exited before it listened")
                match = _LISTENING.search(line)
                if match:
                    port = int(match.group(2))
        ws_url = ""
        async with httpx.AsyncClient() as http, asyncio.timeout(30):
            while not ws_url:
                targets = (await http.get(f"http://127.0.0.1:{port}/json/list")).json()
                ws_url = next(
                    (
                        t["webSocketDebuggerUrl"]
                        for t in targets
                        if t.get("url", "").startswith(url)
                    ),
                    "",
                )
                if not ws_url:
                    await asyncio.sleep(0.1)
        async with connect(ws_url, max_size=None) as ws:
            yield Page(ws)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
