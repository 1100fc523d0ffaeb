"""Sidecars on loopback against a real registry and beacon, in-process."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from natroute.sidecar.appclient import AsyncAppClient
from natroute.sidecar.model import NatType
from natroute.sidecar.peers import Path as PeerPath
from natroute.sidecar.service import Sidecar
from natroute.sidecar.testing import running_sidecar, running_stack

from .helpers import node_id


def _app(sidecar: Sidecar) -> AsyncAppClient:
    assert sidecar.app_addr is not None
    return AsyncAppClient(sidecar.app_addr)


async def _exchange(a: Sidecar, b: Sidecar, payload: bytes) -> None:
    async with _app(a) as app_a, _app(b) as app_b:
        await app_b.send(node_id(a), b"hello")  # teaches b where its app is
        async with asyncio.timeout(5):
            while True:
                await app_a.send(node_id(b), payload)
                try:
                    async with asyncio.timeout(0.3):
                        src, got = await app_b.recv()
                except TimeoutError:
                    continue
                if got == payload:
                    break
        assert src == node_id(a)


@pytest.mark.asyncio
async def test_two_sidecars_exchange_datagrams_directly(tmp_path: Path) -> None:
    async with (
        running_stack(tmp_path) as stack,
        running_sidecar(stack.sidecar_settings("a")) as a,
        running_sidecar(stack.sidecar_settings("b")) as b,
    ):
        assert a.nat_type is NatType.NONE
        await _exchange(a, b, b"ping-1")
        await _exchange(b, a, b"ping-2")
        peer = a.engine.peers.get(node_id(b))
        assert peer is not None
        assert peer.path is PeerPath.DIRECT
        assert not a.manager.is_relay_peer(node_id(b))
