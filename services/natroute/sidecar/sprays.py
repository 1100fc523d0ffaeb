"""Port prediction's spray sockets: the shell half (docs/protocol.md, "Port prediction").

The engine names spray sockets by index (0 is the peer socket) and says
when to open and close them; :class:`SpraySockets` does it. Each socket is
bound to the peer socket's address with a port of the kernel's choosing, is
read by its own :class:`~.udp.DatagramPump` (every datagram goes to the
engine with the socket's index), and is one of the node's own addresses
while it lives (:class:`~.candidates.SelfAddrs`), so nothing is ever sent to
it. At most ``limit`` are open at once; a socket that cannot be opened
(``EMFILE``, ...) is simply not reported as opened, and the engine carries on
with the others. No decision lives here.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterable
from functools import partial

from natroute.routing.addr import format_addr
from natroute.routing.types import Addr

from .candidates import SelfAddrs
from .udp import DatagramPump

__all__ = ["SpraySockets"]

_log = logging.getLogger(__name__)


class SpraySockets:
    """Extra UDP sockets by index, opened and closed as the engine asks.

    Args:
        host: the address to bind (the peer socket's host; the port is the kernel's).
        on_datagram: ``(index, data, source)`` for every datagram read.
        on_batch_end: called after each read batch (the sidecar flushes the engine).
        self_addrs: our own addresses (each open socket's is added, and removed on close).
        limit: most sockets open at once.
    """

    def __init__(
        self,
        host: str,
        on_datagram: Callable[[int, bytes, Addr], None],
        on_batch_end: Callable[[], None],
        self_addrs: SelfAddrs,
        limit: int,
    ) -> None:
        self.host = host
        self._on_datagram = on_datagram
        self._on_batch_end = on_batch_end
        self._self_addrs = self_addrs
        self.limit = limit
        self._pumps: dict[int, DatagramPump] = {}
        self._addrs: dict[int, Addr] = {}
        self.open_failures = 0
        self.sent = 0
        self.send_dropped = 0

    def __len__(self) -> int:
        return len(self._pumps)

    def addr(self, index: int) -> Addr | None:
        """The bound address of socket ``index``, or None."""
        return self._addrs.get(index)

    def open(self, indexes: Iterable[int]) -> list[int]:
        """Open a socket for each index (as many as the limit and the kernel allow).

        Returns:
            The indexes opened.
        """
        opened: list[int] = []
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        for index in indexes:
            if index in self._pumps:
                opened.append(index)
                continue
            if len(self._pumps) >= self.limit:
                self.open_failures += 1
                continue
            try:
                sock = socket.socket(family, socket.SOCK_DGRAM)
            except OSError as exc:
                self._failed(exc)
                continue
            try:
                sock.bind((self.host, 0))
                pump = DatagramPump(
                    sock,
                    partial(self._on_datagram, index),
                    self._read_error,
                    batch=16,
                    on_batch_end=self._on_batch_end,
                )
                pump.start(batched=False)
            except OSError as exc:
                sock.close()
                self._failed(exc)
                continue
            name = sock.getsockname()
            addr = (str(name[0]), int(name[1]))
            self._pumps[index] = pump
            self._addrs[index] = addr
            self._self_addrs.add(addr)
            opened.append(index)
        return opened

    def _failed(self, exc: OSError) -> None:
        self.open_failures += 1
        if self.open_failures == 1 or self.open_failures % 256 == 0:
            _log.warning(
                "spray_socket_failed",
                extra={"error": str(exc), "failures": self.open_failures},
            )

    def _read_error(self, exc: OSError) -> None:
        _log.debug("spray_socket_error", extra={"error": str(exc)})

    def close(self, indexes: Iterable[int]) -> None:
        """Close the sockets of ``indexes`` (unknown ones are ignored)."""
        for index in indexes:
            pump = self._pumps.pop(index, None)
            addr = self._addrs.pop(index, None)
            if addr is not None:
                self._self_addrs.discard(addr)
            if pump is not None:
                pump.close()

    def close_all(self) -> None:
        """Close every socket (shutdown)."""
        self.close(list(self._pumps))

    def send(self, items: Iterable[tuple[int, bytes, Addr]]) -> list[tuple[int, Addr, OSError]]:
        """Send each ``(index, data, addr)`` from its socket.

        Returns:
            ``(index, addr, error)`` of the sends that failed, for the engine.
        """
        failed: list[tuple[int, Addr, OSError]] = []
        for index, data, addr in items:
            pump = self._pumps.get(index)
            if pump is None:
                self.send_dropped += 1  # closed meanwhile
                continue
            try:
                pump.sock.sendto(data, addr)
            except OSError as exc:
                _log.debug(
                    "spray_send_failed",
                    extra={"socket": index, "dst": format_addr(addr), "error": str(exc)},
                )
                failed.append((index, addr, exc))
                continue
            self.sent += 1
        return failed
