"""Answer discovers from a beacon's first milliseconds, while the rest loads.

An upstream daemon sends one Discover about a second after its beacon starts
and never retries; loading the beacon (settings, the core, the HTTP app)
takes longer than that on a cold start. So ``natroute-beacon`` binds its UDP
socket first, with nothing but the standard library and the wire codec
loaded, and an :class:`EarlyResponder` thread answers each Discover with the
observed endpoint at once (the reply does not depend on any setting or
table). Every datagram is also kept, in order, in a bounded backlog that the
real core processes when it takes over (:meth:`BeaconService.start`): the
discovers are then recorded (their replies are not sent a second time),
relays and punches are handled late rather than lost.

While it runs, nothing is rate-limited or recorded: that window lasts only
until the core is up (a fraction of a second), and the backlog is capped
(:data:`BACKLOG_CAP` datagrams; more are counted and dropped).

:func:`listen_from` reads the listen address the way the settings will
(``--listen`` wins over ``NATROUTE_BEACON_LISTEN``, which wins over the
``listen`` key of the ``--config`` file; default
:data:`~natroute.beacon.config.DEFAULT_LISTEN`) without loading them. When the
file cannot be read here, nothing is bound early: the settings report it.
"""

from __future__ import annotations

import json
import socket
import threading
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final, NamedTuple

from natroute._service.udp import bind_udp
from natroute.routing.addr import canonical_ip
from natroute.routing.errors import WireError
from natroute.routing.types import Addr
from natroute.routing.wire import MSG_DISCOVER, DiscoverReply, encode_message

__all__ = [
    "BACKLOG_CAP",
    "DEFAULT_LISTEN",
    "SOCKET_BUFFER",
    "Early",
    "EarlyResponder",
    "early_reply",
    "listen_from",
]

#: Datagrams kept for the core while it loads.
BACKLOG_CAP: Final = 4096
#: The UDP listen address when none is configured (``Settings.listen``).
DEFAULT_LISTEN: Final = "0.0.0.0:9001"
#: Socket buffers of the beacon's UDP socket (bursts of relayed frames).
SOCKET_BUFFER: Final = 4 << 20
_HELP: Final = frozenset({"-h", "--help", "--version"})


class Early(NamedTuple):
    """One datagram received before the core took over.

    Attributes:
        data: the datagram.
        src: its source (host, port).
        answered: a DiscoverReply was already sent for it.
    """

    data: bytes
    src: Addr
    answered: bool


def early_reply(data: bytes, src: Addr) -> bytes | None:
    """The DiscoverReply any beacon sends for ``data``, or None when it is not a Discover.

    The reply carries the observed endpoint; it depends on nothing
    but the source, so it is the same before and after the core exists.
    """
    if len(data) < 5 or data[0] != MSG_DISCOVER:
        return None
    try:
        return encode_message(DiscoverReply((canonical_ip(src[0]), src[1])))
    except WireError:
        return None


def _flag(argv: Sequence[str], name: str) -> str | None:
    value = None
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(name + "="):
            value = arg.partition("=")[2]
    return value


def _file_listen(path: str) -> str | None:
    """The ``listen`` key of a TOML, YAML or JSON settings file; None for another suffix.

    Raises:
        KeyError: the file has no ``listen`` key.
        Exception: the file cannot be read or parsed (each parser has its own errors).
    """
    file = Path(path).expanduser()
    suffix = file.suffix.lower()
    data: Any
    if suffix == ".toml":
        data = tomllib.loads(file.read_text())
    elif suffix == ".json":
        data = json.loads(file.read_text())
    elif suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(file.read_text())
    else:
        return None
    return str(data["listen"])


def listen_from(argv: Sequence[str], env: Mapping[str, str]) -> str | None:
    """The UDP listen address the settings will use, or None for "do not bind early".

    None when the command line asks for help or a version (nothing is served),
    or when the settings file the address would come from cannot be read.
    """
    if any(arg in _HELP for arg in argv):
        return None
    listen = _flag(argv, "--listen") or env.get("NATROUTE_BEACON_LISTEN")
    if listen is not None:
        return listen
    config = _flag(argv, "--config") or env.get("NATROUTE_BEACON_CONFIG")
    if config:
        try:
            return _file_listen(config)
        except KeyError:
            return DEFAULT_LISTEN
        except Exception:  # unreadable or malformed: the settings will say so
            return None
    return DEFAULT_LISTEN


class EarlyResponder:
    """A thread answering discovers on a bound socket until the core takes over."""

    def __init__(self, sock: socket.socket, listen: str, cap: int = BACKLOG_CAP) -> None:
        """Args:
        sock: the bound, non-blocking UDP socket (kept open by :meth:`handover`).
        listen: the address it was bound for (the service checks it matches).
        cap: most datagrams kept for the core.
        """
        self.sock = sock
        self.listen = listen
        self.cap = cap
        self.replies = 0
        self.dropped = 0
        self._backlog: list[Early] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="beacon-early", daemon=True)

    @classmethod
    def start(
        cls, argv: Sequence[str], env: Mapping[str, str], cap: int = BACKLOG_CAP
    ) -> EarlyResponder | None:
        """Bind the listen address of ``argv``/``env`` and start answering.

        Returns:
            The running responder, or None when nothing should or could be
            bound early (help asked, a bad address, a bind error: the service
            then binds, and reports errors, as usual).
        """
        listen = listen_from(argv, env)
        if listen is None:
            return None
        try:
            sock = bind_udp(listen, buffer_size=SOCKET_BUFFER)
        except (OSError, ValueError, UnicodeError):
            return None
        responder = cls(sock, listen, cap)
        responder._thread.start()
        return responder

    def handover(self) -> tuple[socket.socket, list[Early]]:
        """Stop answering; returns the socket and the datagrams received so far."""
        self._stop.set()
        self._thread.join()
        backlog, self._backlog = self._backlog, []
        return self.sock, backlog

    def close(self) -> None:
        """Stop and close the socket (the beacon will not start)."""
        sock, _ = self.handover()
        sock.close()

    def _serve(self) -> None:
        sock, backlog = self.sock, self._backlog
        sock.settimeout(0.02)  # wake up to see the stop flag
        try:
            while not self._stop.is_set():
                try:
                    data, addr = sock.recvfrom(65_535)
                except TimeoutError:
                    continue
                src = (str(addr[0]), int(addr[1]))
                reply = early_reply(data, src)
                if reply is not None:
                    try:
                        sock.sendto(reply, addr)
                        self.replies += 1
                    except OSError:
                        reply = None
                if len(backlog) < self.cap:
                    backlog.append(Early(data, src, reply is not None))
                else:
                    self.dropped += 1
        except OSError:
            pass  # the socket was closed under us: the service reports it
        finally:
            sock.settimeout(0.0)
