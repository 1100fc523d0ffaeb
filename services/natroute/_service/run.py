"""Run helpers shared by the services: the event loop, signals, embedded HTTP.

* :func:`run` runs a coroutine on uvloop when available (asyncio otherwise).
* :func:`wait_for_signal` waits for SIGINT or SIGTERM.
* :class:`EmbeddedHttpServer` serves an ASGI app with uvicorn on the
  running loop (next to UDP endpoints), without uvicorn's own signal
  handling; it binds first, so ``host:0`` works and the bound address is known.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Coroutine, Iterator
from typing import Any

import uvicorn

from natroute.routing.addr import split_host_port
from natroute.routing.types import Addr

__all__ = ["EmbeddedHttpServer", "bind_tcp", "run", "wait_for_signal"]


def run(coro: Coroutine[Any, Any, None], *, use_uvloop: bool = True) -> None:
    """Run ``coro`` to completion on uvloop (or asyncio where uvloop is missing or off).

    The sidecar runs on the stdlib loop: its socket has ``IP_RECVERR`` set (ICMP
    errors are attributed to peers), and uvloop cannot live with that — a UDP
    transport crashes with SIGSEGV on the first queued error, and ``add_reader``
    goes deaf, because libuv stops polling a descriptor that reports POLLERR.
    """
    try:
        if not use_uvloop:
            raise ImportError("uvloop not wanted")
        import uvloop
    except ImportError:
        asyncio.run(coro)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(coro)


async def wait_for_signal() -> None:
    """Return when the process receives SIGINT or SIGTERM."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def bind_tcp(hostport: str) -> socket.socket:
    """A listening, non-blocking TCP socket on ``host:port`` (IPv6 when the host has a colon)."""
    host, port = split_host_port(hostport)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling; the process owns signals."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.up = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.up.set()


class EmbeddedHttpServer:
    """An ASGI app served by uvicorn on the running event loop.

    WebSocket routes run on uvicorn's sans-I/O ``websockets`` protocol.
    ``options`` are further ``uvicorn.Config`` arguments (e.g.
    ``ssl_certfile``/``ssl_keyfile`` for TLS, ``ws_ping_interval``,
    ``ws_max_size``).
    """

    def __init__(self, app: Any, **options: Any) -> None:
        self._app = app
        self._options = options
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.addr: Addr | None = None

    async def start(self, hostport: str) -> Addr:
        """Bind ``host:port`` and serve; returns the bound address.

        Raises:
            OSError: the address cannot be bound or the server did not start.
        """
        sock = bind_tcp(hostport)
        name = sock.getsockname()
        self.addr = (str(name[0]), int(name[1]))
        config = uvicorn.Config(
            self._app,
            log_config=None,
            lifespan="off",
            access_log=False,
            http="h11",
            ws="websockets-sansio",
            ws_per_message_deflate=False,
            **self._options,
        )
        server = self._server = _Server(config)
        task = self._task = asyncio.create_task(server.serve(sockets=[sock]))
        up = asyncio.create_task(server.up.wait())
        await asyncio.wait({task, up}, return_when=asyncio.FIRST_COMPLETED)
        if not up.done():
            up.cancel()
            sock.close()
            self._server = self._task = None
            await task  # re-raises the start-up failure
            raise OSError(f"HTTP server did not start on {hostport}")
        return self.addr

    async def stop(self) -> None:
        """Stop serving and wait for the server task."""
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
        self._server = self._task = None
