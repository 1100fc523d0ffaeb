"""Helpers shared by the sidecar tests: polling waits and a pumping application."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from natroute.sidecar.appclient import AsyncAppClient
from natroute.sidecar.engine import Engine
from natroute.sidecar.peers import Peer
from natroute.sidecar.service import Sidecar

__all__ = ["Pump", "node", "node_id", "peer_of", "wait_for"]


def node_id(sidecar: Sidecar) -> int:
    """The started sidecar's node ID."""
    value = sidecar.engine.node_id
    assert value is not None
    return value


def node(sidecar: Sidecar) -> Engine:
    """The started sidecar's engine (its node ID is set)."""
    assert sidecar.engine.node_id is not None
    return sidecar.engine


async def wait_for(predicate: Callable[[], bool], what: str, limit: float) -> None:
    """Poll ``predicate`` every 50 ms; fail the test after ``limit`` seconds.

    The state being waited on lives in sidecars that have no events to await.
    """
    try:
        async with asyncio.timeout(limit):
            while not predicate():  # noqa: ASYNC110 - polling other objects' state
                await asyncio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"timed out after {limit} s waiting for {what}")


class Pump:
    """An application sending a→b every 50 ms and counting what b receives."""

    def __init__(self, a: Sidecar, b: Sidecar) -> None:
        assert a.app_addr is not None
        assert b.app_addr is not None
        self.app_a = AsyncAppClient(a.app_addr)
        self.app_b = AsyncAppClient(b.app_addr)
        self.dst = node_id(b)
        self.src = node_id(a)
        self.received = 0
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Pump:
        await self.app_b.send(self.src, b"register-app")  # b delivers to this client
        self._tasks = [asyncio.create_task(self._send()), asyncio.create_task(self._recv())]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.app_a.sock.close()
        self.app_b.sock.close()

    async def _send(self) -> None:
        i = 0
        while True:
            await self.app_a.send(self.dst, b"seq-%d" % i)
            i += 1
            await asyncio.sleep(0.05)

    async def _recv(self) -> None:
        while True:
            src, _ = await self.app_b.recv()
            if src == self.src:
                self.received += 1

    async def delivered(self, count: int, limit: float) -> None:
        """Wait until ``count`` more payloads arrived at b."""
        target = self.received + count
        await wait_for(lambda: self.received >= target, f"{count} deliveries", limit)


def peer_of(a: Sidecar, b: Sidecar) -> Peer:
    """a's record of b (fails the test when a does not know b)."""
    peer = node(a).peers.get(node_id(b))
    assert peer is not None, "a does not know b"
    return peer
