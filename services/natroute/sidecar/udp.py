"""The sidecar's UDP shells: the peer socket (with ICMP attribution) and the data plane.

No protocol decision lives here: bytes go to the :class:`~.node.Node` and
back. The peer socket is a plain non-blocking UDP socket, so the Manager sees
send errors synchronously. With Linux ``IP_RECVERR`` the kernel queues every
ICMP error with the original destination; :class:`PeerSocket` drains that
queue and reports each error for the peer it concerns (docs/decisions.md D20) rather
than letting it fail whichever send comes next.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import struct
import time
from collections.abc import Callable
from typing import Final

from natroute._service.udp import bind_udp  # re-exported: the service binds through it
from natroute.beacon.batchio import BatchSocket
from natroute.routing.addr import format_addr
from natroute.routing.errors import ICMP_UNREACHABLE_ERRNOS
from natroute.routing.types import Addr

__all__ = [
    "AppEndpoint",
    "DatagramPump",
    "PeerSocket",
    "bind_udp",
    "port_is_free",
]

_log = logging.getLogger(__name__)

_EE_ERRNO = struct.Struct("=I")
#: Batches read per wake-up before the loop runs other callbacks.
_ROUNDS: Final = 4


class PeerSocket:
    """The node's socket as a ``SocketSender``; drains ICMP errors to ``on_icmp``."""

    def __init__(self, sock: socket.socket, on_icmp: Callable[[Addr, OSError], None]) -> None:
        self._sock = sock
        self._on_icmp = on_icmp
        self.errors_attributed = 0

    @property
    def sock(self) -> socket.socket:
        """The underlying socket."""
        return self._sock

    def sendto(self, data: bytes, addr: Addr, /) -> int:
        """Send; a pending ICMP error of an earlier datagram is drained, then retried once."""
        try:
            return self._sock.sendto(data, addr)
        except OSError as exc:
            if exc.errno in ICMP_UNREACHABLE_ERRNOS and self.drain_errors():
                return self._sock.sendto(data, addr)
            raise

    def drain_errors(self) -> int:
        """Read the socket's error queue; report each error with its destination."""
        count = 0
        while True:
            try:
                _, ancdata, _, dst = self._sock.recvmsg(64, 512, socket.MSG_ERRQUEUE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            code = 0
            for _level, _type, cdata in ancdata:
                if len(cdata) >= _EE_ERRNO.size:
                    code = _EE_ERRNO.unpack_from(cdata)[0]
            if dst and code:
                count += 1
                self.errors_attributed += 1
                self._on_icmp((dst[0], dst[1]), OSError(code, errno.errorcode.get(code, "?")))
        return count


class DatagramPump:
    """Reads a non-blocking UDP socket from the event loop, in batches.

    ``loop.add_reader`` instead of a datagram transport: one wake-up reads
    up to ``batch`` datagrams, with one ``recvmmsg`` call per batch where the
    platform has it (:class:`~natroute.beacon.batchio.BatchSocket`), else one
    ``recvfrom`` each. An ``IP_RECVERR`` error makes the descriptor report
    POLLERR; the stdlib selector loop then wakes the reader, whose read raises
    the error, and it goes to ``on_error`` (which drains the error queue). A
    callback that raises is logged, never fatal. With ``on_datagrams``, a
    batch read by ``recvmmsg`` goes to it as one list (one call instead of
    one per datagram); ``on_datagram`` still takes single reads.
    """

    def __init__(
        self,
        sock: socket.socket,
        on_datagram: Callable[[bytes, Addr], None],
        on_error: Callable[[OSError], None],
        batch: int = 64,
        on_batch_end: Callable[[], None] | None = None,
        on_datagrams: Callable[[list[tuple[bytes, Addr]]], None] | None = None,
    ) -> None:
        self.sock = sock
        self._on_datagram = on_datagram
        self._on_datagrams = on_datagrams
        self._on_error = on_error
        self._batch = batch
        self._on_batch_end = on_batch_end
        self._loop: asyncio.AbstractEventLoop | None = None
        self.batched: BatchSocket | None = None

    def start(self, *, batched: bool = True) -> None:
        """Start reading on the running loop (with ``recvmmsg`` when ``batched`` and available)."""
        self.sock.setblocking(False)
        if batched:
            self.batched = BatchSocket.create(self.sock, batch=self._batch, gso=True, gro=True)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.sock.fileno(), self.read_ready)

    def close(self) -> None:
        """Stop reading and close the socket."""
        if self._loop is not None and self.sock.fileno() >= 0:
            self._loop.remove_reader(self.sock.fileno())
        self._loop = None
        self.sock.close()

    def read_ready(self) -> None:
        """Read what is there (at most one batch), then call ``on_batch_end`` once."""
        if self.batched is not None:
            self._read_batched(self.batched)
            return
        recvfrom = self.sock.recvfrom
        on_datagram = self._on_datagram
        try:
            for _ in range(self._batch):
                try:
                    data, addr = recvfrom(65535)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError as exc:
                    self._on_error(exc)
                    continue
                try:
                    on_datagram(data, (addr[0], addr[1]))
                except Exception:  # a bug must not kill the receive loop; it is logged
                    _log.exception("datagram_handler_failed")
        finally:
            if self._on_batch_end is not None:
                try:
                    self._on_batch_end()
                except Exception:
                    _log.exception("datagram_batch_end_failed")

    def _read_batched(self, batched: BatchSocket) -> None:
        on_datagram = self._on_datagram
        try:
            for _ in range(_ROUNDS):
                try:
                    n = batched.recv()
                except OSError as exc:  # a queued ICMP error (IP_RECVERR)
                    self._on_error(exc)
                    continue
                if not n:
                    return
                if self._on_datagrams is not None:
                    try:
                        self._on_datagrams(list(batched.received(n)))
                    except Exception:  # a bug must not kill the receive loop; it is logged
                        _log.exception("datagram_handler_failed")
                else:
                    for data, addr in batched.received(n):
                        try:
                            on_datagram(data, addr)
                        except Exception:  # a bug must not kill the receive loop; it is logged
                            _log.exception("datagram_handler_failed")
                if n < batched.size:
                    return
        finally:
            if self._on_batch_end is not None:
                try:
                    self._on_batch_end()
                except Exception:
                    _log.exception("datagram_batch_end_failed")


def port_is_free(addr: Addr) -> bool:
    """True when no UDP socket of this network namespace is bound to ``addr``'s port.

    Binds a throw-away socket to ``addr`` (without ``SO_REUSEADDR``): the bind
    fails with ``EADDRINUSE`` while the application still holds its socket.
    """
    family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(addr)
        except OSError:
            return False
    return True


class AppEndpoint:
    """The local data plane: ``[dst u32][payload]`` in, ``[src u32][payload]`` out.

    Received payloads go to ``deliver_to`` when it is set (``--app-deliver``).
    Otherwise the first application that sends becomes the delivery target and
    keeps it (README, "The local data plane"): a datagram from another local
    socket is still sent on, but never takes the deliveries, unless the
    learned application's port is free again (it went away). Datagrams from
    the sidecar's own sockets are dropped: another node could otherwise make
    our peer socket "become" the application.

    Args:
        sock: the bound data-plane socket.
        on_send: ``(dst, payload)`` to the engine.
        deliver_to: a fixed delivery address, or None to learn it.
        is_self: is an address one of the sidecar's own sockets?
        clock: monotonic seconds (paces the "application gone" check).
        port_free: the "application gone" check (tests inject one).
        on_batch_end: called once after each batch of datagrams read.
        on_send_many: a batch of accepted ``[dst u32][payload]`` datagrams to
            the engine in one call (when reads are batched); None: ``on_send``
            each.
    """

    def __init__(
        self,
        sock: socket.socket,
        on_send: Callable[[int, bytes], None],
        deliver_to: Addr | None,
        *,
        is_self: Callable[[Addr], bool] = lambda addr: False,
        clock: Callable[[], float] = time.monotonic,
        port_free: Callable[[Addr], bool] = port_is_free,
        on_batch_end: Callable[[], None] | None = None,
        on_send_many: Callable[[list[bytes]], None] | None = None,
    ) -> None:
        self.sock = sock
        self._on_send = on_send
        self._on_send_many = on_send_many
        self._deliver_to = deliver_to
        self._fixed = deliver_to is not None
        self._is_self = is_self
        self._clock = clock
        self._port_free = port_free
        self._next_gone_check = 0.0
        self._contender: Addr | None = None
        self._pump = DatagramPump(
            sock,
            self._received,
            self._error,
            on_batch_end=on_batch_end,
            on_datagrams=self._received_many if on_send_many is not None else None,
        )
        self.dropped_short = 0
        self.dropped_no_app = 0
        self.dropped_busy = 0
        self.dropped_self = 0
        self.foreign_sources = 0
        self.target_changes = 0
        self.received = 0
        self.delivered = 0

    @property
    def addr(self) -> Addr:
        """The bound data-plane address."""
        name = self.sock.getsockname()
        return str(name[0]), int(name[1])

    @property
    def deliver_to(self) -> Addr | None:
        """Where payloads from peers go now."""
        return self._deliver_to

    def start(self, *, batched: bool = True) -> None:
        """Start reading on the running loop (``recvmmsg``/``sendmmsg`` when ``batched``)."""
        self._pump.start(batched=batched)

    def close(self) -> None:
        """Stop reading and close the socket."""
        self._pump.close()

    def _error(self, exc: OSError) -> None:
        _log.debug("app_socket_error", extra={"error": str(exc)})

    def _received(self, data: bytes, addr: Addr) -> None:
        if self._accept(data, addr):
            self._on_send(int.from_bytes(data[:4], "big"), data[4:])

    def _received_many(self, items: list[tuple[bytes, Addr]]) -> None:
        """A ``recvmmsg`` batch: checked as one by one, handed on as one list."""
        assert self._on_send_many is not None
        learned = None if self._fixed else self._deliver_to
        accepted: list[bytes] = []
        busy = 0
        for data, addr in items:
            if addr == learned and len(data) >= 4:  # the busy case: the learned application
                accepted.append(data)
                busy += 1
            elif self._accept(data, addr):
                accepted.append(data)
                learned = None if self._fixed else self._deliver_to
        self.received += busy
        if accepted:
            self._on_send_many(accepted)

    def _accept(self, data: bytes, addr: Addr) -> bool:
        """Checks a datagram from a local socket; learns the application from it."""
        # The learned application passed the self check when it was learned.
        if (addr != self._deliver_to or self._fixed) and self._is_self(addr):
            self.dropped_self += 1
            return False
        if len(data) < 4:
            self.dropped_short += 1
            return False
        self.received += 1
        if not self._fixed and addr != self._deliver_to:
            self._learn(addr)
        return True

    def _learn(self, addr: Addr) -> None:
        if self._deliver_to is not None:
            if addr != self._contender:
                self.foreign_sources += 1
                _log.warning(
                    "app_foreign_source",
                    extra={"source": format_addr(addr), "app": format_addr(self._deliver_to)},
                )
            self._contender = addr
            if not self._current_gone():
                return
        self._switch(addr)

    def _switch(self, addr: Addr) -> None:
        previous = self._deliver_to
        if previous is not None:
            self.target_changes += 1
        _log.info(
            "app_target_learned",
            extra={
                "app": format_addr(addr),
                "previous": format_addr(previous) if previous else None,
            },
        )
        self._deliver_to = addr
        self._contender = None

    def _current_gone(self) -> bool:
        """Has the learned application closed its socket? (checked at most 10 times a second)"""
        now = self._clock()
        if self._deliver_to is None or now < self._next_gone_check:
            return False
        self._next_gone_check = now + 0.1
        return self._port_free(self._deliver_to)

    def deliver_all(self, deliveries: list[tuple[int, bytes]]) -> None:
        """Hand payloads to the application, with one ``sendmmsg`` where available."""
        batched = self._pump.batched
        if batched is None or len(deliveries) < 2:
            for src, payload in deliveries:
                self.deliver(src, payload)
            return
        if self._contender is not None and self._current_gone():
            self._switch(self._contender)
        target = self._deliver_to
        if target is None:
            self.dropped_no_app += len(deliveries)
            return
        result = batched.send([(src.to_bytes(4, "big") + p, target) for src, p in deliveries])
        self.delivered += result.sent
        self.dropped_busy += result.dropped

    def deliver(self, src: int, payload: bytes) -> None:
        """Hand a payload from node ``src`` to the application."""
        if self._contender is not None and self._current_gone():
            self._switch(self._contender)
        if self._deliver_to is None:
            self.dropped_no_app += 1
            return
        try:
            self.sock.sendto(src.to_bytes(4, "big") + payload, self._deliver_to)
        except OSError:  # buffer full, or the application went away
            self.dropped_busy += 1
            return
        self.delivered += 1
