"""A UDP impairment proxy: a tiny NAT-like forwarder that can blackhole a path.

Clients send to ``proxy.addr``; each client gets its own upstream socket
towards ``target``, and answers from the target go back to the client from
``proxy.addr``. While ``blocked`` is set every datagram, both ways, is
dropped — a partition of the direct path that leaves the beacon alone.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from natroute.routing.types import Addr

__all__ = ["ImpairmentProxy"]


class _Listener(asyncio.DatagramProtocol):
    def __init__(self, proxy: ImpairmentProxy) -> None:
        self.proxy = proxy

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.proxy.from_client(data, (addr[0], addr[1]))


class _Upstream(asyncio.DatagramProtocol):
    def __init__(self, proxy: ImpairmentProxy, client: Addr) -> None:
        self.proxy = proxy
        self.client = client
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.proxy.from_target(data, self.client)


class ImpairmentProxy:
    """Start with ``await start()``; set ``target`` before traffic flows."""

    def __init__(self) -> None:
        self.target: Addr | None = None
        self.blocked = False
        self.dropped = 0
        self.forwarded = 0
        self.addr: Addr = ("", 0)
        self._listener: asyncio.DatagramTransport | None = None
        self._upstreams: dict[Addr, _Upstream] = {}
        self._pending: set[asyncio.Task[None]] = set()

    async def start(self) -> Addr:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Listener(self), local_addr=("127.0.0.1", 0)
        )
        self._listener = transport
        name = transport.get_extra_info("sockname")
        self.addr = (name[0], name[1])
        return self.addr

    def close(self) -> None:
        for task in self._pending:
            task.cancel()
        for upstream in self._upstreams.values():
            if upstream.transport is not None:
                upstream.transport.close()
        if self._listener is not None:
            self._listener.close()

    def from_client(self, data: bytes, client: Addr) -> None:
        if self.blocked or self.target is None:
            self.dropped += 1
            return
        upstream = self._upstreams.get(client)
        if upstream is None:
            upstream = self._upstreams[client] = _Upstream(self, client)
            task = asyncio.get_running_loop().create_task(self._open(upstream, data))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
            return
        if upstream.transport is not None:
            self.forwarded += 1
            upstream.transport.sendto(data, self.target)

    async def _open(self, upstream: _Upstream, first: bytes) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: upstream, local_addr=("127.0.0.1", 0))
        if upstream.transport is not None and self.target is not None:
            self.forwarded += 1
            upstream.transport.sendto(first, self.target)

    def from_target(self, data: bytes, client: Addr) -> None:
        if self.blocked or self._listener is None:
            self.dropped += 1
            return
        self.forwarded += 1
        self._listener.sendto(data, client)
