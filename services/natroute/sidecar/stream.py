"""The sidecar's client of a beacon's stream relay (beacon README "Stream relay").

When UDP is blocked, a node can still reach its beacon over TCP: a WebSocket
to the beacon's ``/v1/relay`` (``ws://`` in the lab, ``wss://`` when the
beacon has a certificate; HTTP(S) proxies from the environment are used).
:class:`StreamRelayClient` opens the session, answers the beacon's challenge
with a hello signed by the node's Ed25519 key (:mod:`natroute.beacon.streamproto`),
and then carries beacon messages both ways, one per binary WebSocket message:

* :meth:`StreamRelayClient.send` queues what the node would send the beacon
  over UDP (``05|src|dst|frame``); it never blocks: a full queue or a closed
  session drops the datagram, counts it and returns False;
* ``on_datagram`` is called with every message from the beacon
  (``06|src|frame``), byte for byte what a UDP datagram from the beacon
  would carry;
* a ``01|node_id`` keepalive goes out every ``keepalive_interval`` seconds
  (the beacon closes sessions that stay silent); WebSocket pings detect a
  dead connection.

The client does not reconnect: when :attr:`StreamRelayClient.closed` turns
true (:meth:`StreamRelayClient.wait_closed` returns), the owner decides what
to do next and makes a new client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl as ssl_module
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from natroute._service.tasks import cancel_and_wait
from natroute.beacon.streamproto import (
    HelloError,
    HelloReject,
    decode_challenge,
    decode_welcome,
    sign_hello,
)
from natroute.routing.wire import RELAY_HEADER_LEN, Discover, encode_message

__all__ = ["KEEPALIVE_INTERVAL", "StreamCounters", "StreamRelayClient", "StreamRelayError"]

_log = logging.getLogger(__name__)

#: Seconds between the client's ``01|node_id`` keepalives (the beacon's idle
#: timeout is 75 s by default: three keepalives may be lost).
KEEPALIVE_INTERVAL: Final = 25.0
#: Largest message accepted from the beacon: a relay header and 65 535 bytes.
_MAX_MESSAGE: Final = RELAY_HEADER_LEN + 65_535


class StreamRelayError(Exception):
    """The stream relay session could not be opened.

    Attributes:
        reason: a stable snake_case reason: a :class:`HelloReject` value when
            the beacon refused the hello (``bad_signature``, ``unknown_node``,
            ``wrong_key``, ``busy``, ...), or ``connect_failed``,
            ``timeout``, ``protocol``, ``beacon_mismatch``.
        code: the WebSocket close code the beacon sent, if any.
    """

    def __init__(self, reason: str, detail: str, code: int | None = None) -> None:
        self.reason = reason
        self.code = code
        super().__init__(f"stream relay: {reason}: {detail}")


@dataclass(slots=True)
class StreamCounters:
    """What went through one session (mutable; read it, do not change it)."""

    sent: int = 0
    received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    dropped_queue_full: int = 0
    dropped_closed: int = 0


class StreamRelayClient:
    """One stream relay session to one beacon, for one node."""

    def __init__(
        self,
        url: str,
        node_id: int,
        key: Ed25519PrivateKey,
        on_datagram: Callable[[bytes], None],
        *,
        ssl: ssl_module.SSLContext | None = None,
        connect_timeout: float = 5.0,
        max_queue: int = 1024,
        beacon_id: int | None = None,
        keepalive_interval: float = KEEPALIVE_INTERVAL,
    ) -> None:
        """Prepare a session (nothing is opened until :meth:`connect`).

        Args:
            url: the beacon's stream URL (``ws://host:port/v1/relay`` or ``wss://``).
            node_id: this node's ID, as registered in the registry.
            key: this node's Ed25519 identity key (the registry's key for it).
            on_datagram: called with each message from the beacon, in order;
                it must not block (it runs on the event loop).
            ssl: TLS context for ``wss://`` (default: the system's CAs).
            connect_timeout: seconds for the TCP, TLS, WebSocket and hello steps.
            max_queue: most datagrams waiting to be written; more are dropped.
            beacon_id: the beacon ID expected in the challenge (from the
                registry's beacon list); a different one fails the connect
                (``beacon_mismatch``), so no other beacon can relay our hello.
            keepalive_interval: seconds between keepalives.
        """
        self.url = url
        self.node_id = node_id
        self._key = key
        self._on_datagram = on_datagram
        self._ssl = ssl
        self.connect_timeout = connect_timeout
        self.max_queue = max_queue
        self.beacon_id = beacon_id
        self.keepalive_interval = keepalive_interval
        self.counters = StreamCounters()
        #: True once the session ended (or never opened).
        self.closed = True
        #: Why it ended: ``""`` while open or before connecting.
        self.close_reason = ""
        self._ws: ClientConnection | None = None
        self._queue: deque[bytes] = deque()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._done = asyncio.Event()

    async def connect(self) -> None:
        """Open the WebSocket and complete the hello.

        Raises:
            StreamRelayError: the beacon could not be reached, refused the
                hello (``reason`` says why) or did not answer in time.
        """
        if self._ws is not None:
            raise RuntimeError("connect() called twice")
        try:
            async with asyncio.timeout(self.connect_timeout):
                # ssl: our context for wss:// (the default one when None); never for ws://.
                tls: dict[str, Any] = {}
                if self._ssl is not None and self.url.startswith("wss:"):
                    tls["ssl"] = self._ssl
                ws = await connect(
                    self.url,
                    compression=None,  # encrypted frames do not compress
                    open_timeout=None,
                    max_size=_MAX_MESSAGE,
                    user_agent_header="natroute-sidecar",
                    **tls,
                )
                self._ws = ws
                await self._hello(ws)
        except TimeoutError as exc:
            await self._abort()
            raise StreamRelayError(
                "timeout", f"no session within {self.connect_timeout} s"
            ) from exc
        except StreamRelayError:
            await self._abort()
            raise
        except (OSError, InvalidURI, InvalidHandshake) as exc:
            await self._abort()
            raise StreamRelayError("connect_failed", f"{self.url}: {exc}") from exc
        self.closed = False
        self._tasks = [
            asyncio.create_task(self._read(ws)),
            asyncio.create_task(self._write(ws)),
            asyncio.create_task(self._keepalive()),
        ]

    async def _hello(self, ws: ClientConnection) -> None:
        try:
            challenge = decode_challenge(_binary(await ws.recv()))
            if self.beacon_id is not None and challenge.beacon_id != self.beacon_id:
                raise StreamRelayError(
                    "beacon_mismatch",
                    f"expected beacon {self.beacon_id}, the server is {challenge.beacon_id}",
                )
            await ws.send(sign_hello(self._key, self.node_id, challenge))
            if decode_welcome(_binary(await ws.recv())) != self.node_id:
                raise StreamRelayError("protocol", "welcome for another node")
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else None
            refused = HelloReject.from_close_code(code) if code is not None else None
            reason = refused.value if refused is not None else "connect_failed"
            raise StreamRelayError(reason, f"closed by the beacon ({exc})", code) from exc
        except HelloError as exc:
            raise StreamRelayError("protocol", str(exc)) from exc

    def send(self, datagram: bytes) -> bool:
        """Queue one beacon message (a ``05`` relay frame) for the beacon.

        Returns:
            True when queued; False when the session is closed or the queue
            is full (the datagram is dropped and counted).
        """
        counters = self.counters
        if self.closed:
            counters.dropped_closed += 1
            return False
        if len(self._queue) >= self.max_queue:
            counters.dropped_queue_full += 1
            return False
        self._queue.append(datagram)
        self._wake.set()
        return True

    async def close(self) -> None:
        """End the session (idempotent)."""
        await self._finish("closed by the client")

    async def wait_closed(self) -> None:
        """Return once the session has ended (by either side or a failure)."""
        if self._ws is None:
            return
        await self._done.wait()

    async def _read(self, ws: ClientConnection) -> None:
        counters, on_datagram = self.counters, self._on_datagram
        reason = "closed"
        try:
            async for message in ws:
                if isinstance(message, str):
                    continue  # the beacon sends no text; ignore rather than fail
                counters.received += 1
                counters.bytes_received += len(message)
                on_datagram(message)
        except ConnectionClosed as exc:
            reason = _closed_reason(exc)
        except Exception as exc:  # a bug in on_datagram must not leave a zombie session
            reason = f"on_datagram failed: {exc!r}"
            _log.exception("stream_on_datagram_failed")
        else:
            code = ws.close_code
            reason = f"closed by the beacon ({code})" if code is not None else "closed"
        await self._finish(reason)

    async def _write(self, ws: ClientConnection) -> None:
        queue, counters = self._queue, self.counters
        try:
            while True:
                while queue:
                    data = queue.popleft()
                    await ws.send(data)
                    counters.sent += 1
                    counters.bytes_sent += len(data)
                self._wake.clear()
                await self._wake.wait()
        except ConnectionClosed as exc:
            await self._finish(_closed_reason(exc))

    async def _keepalive(self) -> None:
        ping = encode_message(Discover(self.node_id))
        while True:
            await asyncio.sleep(self.keepalive_interval)
            self._queue.append(ping)  # may exceed max_queue by one: a keepalive is never dropped
            self._wake.set()

    async def _finish(self, reason: str) -> None:
        if self._done.is_set() or self._ws is None:
            return
        self.closed = True
        self.close_reason = reason
        self._done.set()
        current = asyncio.current_task()
        await cancel_and_wait(t for t in self._tasks if t is not current)
        self._queue.clear()
        await self._ws.close()
        _log.info("stream_relay_closed", extra={"url": self.url, "reason": reason})

    async def _abort(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()


def _binary(message: str | bytes) -> bytes:
    if isinstance(message, str):
        raise StreamRelayError("protocol", "text message during the hello")
    return message


def _closed_reason(exc: ConnectionClosed) -> str:
    rcvd = exc.rcvd
    if rcvd is None:
        return "connection lost"
    return f"closed by the beacon ({rcvd.code} {rcvd.reason})".rstrip()
