"""The stream relay's shell: WebSocket sessions between nodes and the core.

:class:`StreamHub` serves ``/v1/relay`` sessions (beacon README "Stream
relay"). Each session runs the hello of :mod:`.streamproto` (a fresh
challenge, the node's signed answer, the registry's key for the node), is
attached to the core as a synthetic address ``(STREAM_HOST, n)`` that no UDP
source can equal, and from then on moves binary messages between its
WebSocket and :meth:`BeaconCore.handle_stream_message`. The core decides;
the hub only moves bytes, counts and enforces the transport's limits:

* at most ``max_sessions`` sessions (more are closed at once, ``busy``);
* a hello must arrive within ``hello_timeout`` seconds;
* a session that sends nothing for ``idle_timeout`` seconds is closed (the
  client keeps alive with ``01|node_id`` messages; the server also pings at
  the WebSocket level, which uvicorn runs);
* each session has a bounded send queue: a frame for a session whose queue
  is full is dropped and counted (a slow reader never makes the beacon
  buffer without bound); the per-session frame and byte budgets are the
  core's relay budgets, keyed by the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
from collections import Counter, deque
from collections.abc import Callable, Iterable
from types import MappingProxyType
from typing import Any, Protocol

from natroute._service.tasks import cancel_and_wait
from natroute.routing.addr import format_addr
from natroute.routing.types import Addr

from .core import STREAM_HOST, AttachResult, BeaconCore, Outgoing
from .nodekeys import NodeKeys
from .streamlimits import StreamLimits
from .streamproto import (
    CLOSE_IDLE,
    CLOSE_MOVED,
    HelloError,
    HelloReject,
    decode_hello,
    encode_challenge,
    encode_welcome,
    verify_hello,
)

__all__ = ["RelaySocket", "StreamHub"]

_log = logging.getLogger(__name__)


class RelaySocket(Protocol):
    """The part of an accepted ASGI WebSocket the hub uses (Starlette's ``WebSocket``)."""

    async def accept(self) -> None:
        """Complete the WebSocket handshake."""
        ...

    async def receive(self) -> Any:
        """The next ASGI message (``websocket.receive`` or ``websocket.disconnect``)."""
        ...

    async def send_bytes(self, data: bytes) -> None:
        """Send one binary message."""
        ...

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        """Start the closing handshake."""
        ...


class _Session:
    __slots__ = ("addr", "close_code", "last_rx", "node_id", "queue", "wake", "ws")

    def __init__(self, addr: Addr, node_id: int, ws: RelaySocket, now: float) -> None:
        self.addr = addr
        self.node_id = node_id
        self.ws = ws
        self.queue: deque[bytes] = deque()
        self.wake = asyncio.Event()
        self.last_rx = now
        self.close_code: int | None = None


class StreamHub:
    """Every stream session of one beacon."""

    def __init__(
        self,
        core: BeaconCore,
        dispatch: Callable[[Iterable[Outgoing]], None],
        clock: Callable[[], float],
        limits: StreamLimits,
        keys: NodeKeys | None,
    ) -> None:
        """Args:
        core: the beacon core the sessions attach to.
        dispatch: sends the core's outputs (UDP ones and, through :meth:`send`,
            stream ones); the UDP shell's ``send``.
        clock: monotonic seconds (the core's ``now``).
        limits: the transport limits.
        keys: the registry's node keys, or None when there is no registry.
        """
        self.core = core
        self.dispatch = dispatch
        self.clock = clock
        self.limits = limits
        self.keys = keys
        self._sessions: dict[Addr, _Session] = {}
        self._numbers = itertools.count(1)
        self._opening = 0
        self.counters: Counter[str] = Counter()

    # -- what the shell and the admin app read ----------------------------------

    @property
    def sessions(self) -> int:
        """Sessions open (attached, or in their hello)."""
        return len(self._sessions) + self._opening

    @property
    def queued(self) -> int:
        """Messages waiting in the sessions' send queues (each at most ``send_queue``)."""
        return sum(len(s.queue) for s in self._sessions.values())

    def snapshot(self) -> MappingProxyType[str, int]:
        """Counters: ``attached``, ``closed``, ``rejected_<reason>``, ``sent``,
        ``sent_bytes``, ``received``, ``dropped_queue_full``, ``dropped_closed``."""
        return MappingProxyType(dict(self.counters))

    # -- the data path -----------------------------------------------------------

    def send(self, data: bytes, addr: Addr) -> None:
        """Queue one message for the session at ``addr``; drop it when it cannot take it."""
        session = self._sessions.get(addr)
        if session is None or session.close_code is not None:
            self.counters["dropped_closed"] += 1
            return
        if len(session.queue) >= self.limits.send_queue:
            self.counters["dropped_queue_full"] += 1
            return
        session.queue.append(data)
        session.wake.set()

    def close_idle(self) -> int:
        """Close sessions that sent nothing for ``idle_timeout`` seconds.

        Returns:
            How many were closed.
        """
        cutoff = self.clock() - self.limits.idle_timeout
        idle = [s for s in self._sessions.values() if s.last_rx < cutoff and s.close_code is None]
        for session in idle:
            self._close(session, CLOSE_IDLE)
        self.counters["closed_idle"] += len(idle)
        return len(idle)

    async def close_all(self) -> None:
        """Close every session (the beacon is stopping)."""
        for session in list(self._sessions.values()):
            self._close(session, 1001)

    # -- one session ---------------------------------------------------------------

    async def serve(self, ws: RelaySocket, peer: Addr) -> None:
        """Run one session on an accepted-for-upgrade WebSocket until it closes.

        Args:
            ws: the WebSocket (not yet accepted).
            peer: the TCP peer's address (IP charged to the node quotas).
        """
        if self.sessions >= self.limits.max_sessions:
            await ws.accept()
            await self._reject(ws, HelloError(HelloReject.BUSY, "session cap"))
            return
        self._opening += 1
        try:
            await ws.accept()
            attached = await self._hello(ws, peer)
        finally:
            self._opening -= 1
        if attached is not None:
            await self._run(attached)

    async def _hello(self, ws: RelaySocket, peer: Addr) -> _Session | None:
        beacon_id = self.core.config.beacon_id
        challenge = secrets.token_bytes(32)
        try:
            await ws.send_bytes(encode_challenge(beacon_id, challenge))
            async with asyncio.timeout(self.limits.hello_timeout):
                message = await ws.receive()
                data = message.get("bytes") if isinstance(message, dict) else None
                if message.get("type") == "websocket.disconnect":
                    self.counters["rejected_disconnected"] += 1
                    return None
                hello = decode_hello(data if isinstance(data, bytes) else b"")
                verify_hello(hello, challenge, beacon_id)
                authoritative = await self._check_key(hello.node_id, hello.pubkey)
        except TimeoutError:
            await self._reject(ws, HelloError(HelloReject.TIMEOUT))
            return None
        except HelloError as exc:
            await self._reject(ws, exc)
            return None
        addr = (STREAM_HOST, next(self._numbers))
        now = self.clock()
        attach = self.core.stream_attach(
            addr, hello.node_id, hello.pubkey, peer[0], now, authoritative=authoritative
        )
        if attach.result is not AttachResult.ATTACHED:
            reason = (
                HelloReject.TAKEOVER_REJECTED
                if attach.result is AttachResult.TAKEOVER_REJECTED
                else HelloReject.TABLE_FULL
            )
            await self._reject(ws, HelloError(reason))
            return None
        if attach.replaced is not None and (old := self._sessions.get(attach.replaced)):
            self._close(old, CLOSE_MOVED)
        session = _Session(addr, hello.node_id, ws, now)
        self._sessions[addr] = session
        self.counters["attached"] += 1
        _log.info(
            "stream_attached",
            extra={"node_id": hello.node_id, "peer": format_addr(peer), "session": addr[1]},
        )
        return session

    async def _check_key(self, node_id: int, pubkey: bytes) -> bool:
        """True when the registry confirmed the key; False when trusted as a first key.

        Raises:
            HelloError: ``unknown_node``, ``wrong_key``, ``registry_unavailable``
                (unless first keys are trusted) or ``busy``.
        """
        if self.keys is None:
            if self.limits.trust_first_key:
                return False
            raise HelloError(HelloReject.REGISTRY_UNAVAILABLE, "no registry configured")
        try:
            key = await self.keys.key_of(node_id)
        except HelloError as exc:
            if exc.reason is HelloReject.REGISTRY_UNAVAILABLE and self.limits.trust_first_key:
                return False
            raise
        if key is None:
            raise HelloError(HelloReject.UNKNOWN_NODE)
        if key != pubkey:
            raise HelloError(HelloReject.WRONG_KEY)
        return True

    async def _reject(self, ws: RelaySocket, error: HelloError) -> None:
        self.counters[f"rejected_{error.reason.value}"] += 1
        _log.info(
            "stream_hello_rejected", extra={"reason": error.reason.value, "error": str(error)}
        )
        with contextlib.suppress(Exception):  # the peer may be gone already
            await ws.close(error.reason.close_code, error.reason.value)

    async def _run(self, session: _Session) -> None:
        writer = asyncio.create_task(self._write(session))
        ws, core, counters = session.ws, self.core, self.counters
        try:
            await ws.send_bytes(encode_welcome(session.node_id))
            while True:
                message = await ws.receive()
                data = message.get("bytes")
                if data is None:
                    if message.get("type") == "websocket.disconnect":
                        break
                    data = b""  # a text message: dropped by the core as malformed
                now = self.clock()
                session.last_rx = now
                counters["received"] += 1
                out, attached = core.handle_stream_message(session.addr, session.node_id, data, now)
                if out:
                    self.dispatch(out)
                if not attached and session.close_code is None:
                    self._close(session, CLOSE_MOVED)
        except Exception as exc:  # the connection broke under us: the session ends
            _log.debug("stream_session_error", extra={"error": repr(exc)})
        finally:
            await cancel_and_wait([writer])
            del self._sessions[session.addr]
            core.stream_detach(session.addr, session.node_id)
            counters["closed"] += 1
            _log.info(
                "stream_detached",
                extra={
                    "node_id": session.node_id,
                    "session": session.addr[1],
                    "code": session.close_code,
                },
            )

    async def _write(self, session: _Session) -> None:
        """Drain the session's queue into its WebSocket; close it when asked."""
        ws, queue, counters = session.ws, session.queue, self.counters
        while True:
            while queue and session.close_code is None:
                data = queue.popleft()
                await ws.send_bytes(data)
                counters["sent"] += 1
                counters["sent_bytes"] += len(data)
            if session.close_code is not None:
                queue.clear()
                with contextlib.suppress(Exception):
                    await ws.close(session.close_code)
                return
            session.wake.clear()
            await session.wake.wait()

    def _close(self, session: _Session, code: int) -> None:
        session.close_code = code
        session.wake.set()
