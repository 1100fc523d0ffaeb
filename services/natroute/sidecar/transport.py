"""How the node reaches its beacon: UDP, or a WebSocket stream when UDP is blocked.

Some networks block UDP altogether. When no beacon has answered over UDP for
``stream_after`` seconds (at start-up: when the NAT check heard nothing), the
node attaches to a beacon's stream relay (its ``stream_url`` in the
registry's beacon list, or ``--beacon-stream``), registers ``relay_only``
with transport ``stream``, and relays everything through it; no direct path
exists then (docs/protocol.md, "Transports"). It keeps asking the beacons
over UDP on a backoff; the first UDP answer moves it back: the stream closes,
the NAT is checked again and the paths' checks run.

:class:`StreamLink` is the shell around one
:class:`~.stream.StreamRelayClient`: which beacon, when to try UDP again,
and the hand-over of relay frames (``0x05``) to the stream. The decisions
about peers stay in the engine (:meth:`~.engine.Engine.set_transport`).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from natroute.registry.client import AsyncRegistryClient, RegistryClientError
from natroute.routing.addr import split_host_port
from natroute.routing.manager import Manager
from natroute.routing.selection import BeaconSelectionState
from natroute.routing.types import Addr
from natroute.routing.wire import MSG_RELAY

from .engine import Engine
from .model import Transport
from .registrylink import RegistryLink
from .settings import Settings
from .stream import StreamRelayClient, StreamRelayError

__all__ = ["StreamLink", "StreamTarget", "Transports", "pick_stream_target"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StreamTarget:
    """A beacon to attach to over a stream: its stream URL, UDP address and ID."""

    url: str
    beacon: str  # host:port of its UDP socket, as listed
    beacon_id: int | None


async def pick_stream_target(
    registry: AsyncRegistryClient, preferred: str, explicit: str
) -> StreamTarget | None:
    """The beacon to attach to: ``explicit`` (a URL setting), else the registry's
    entry for ``preferred`` when it has a stream URL, else the first that has one."""
    try:
        listed = await registry.beacons()
    except RegistryClientError as exc:
        _log.warning("stream_beacon_list_failed", extra={"error": str(exc)})
        listed = []
    with_stream = [b for b in listed if b.stream_url]
    if explicit:
        match = next((b for b in listed if b.stream_url == explicit), None)
        beacon = match.addr if match else preferred
        return StreamTarget(explicit, beacon, match.id if match else None)
    chosen = next((b for b in with_stream if b.addr == preferred), None) or next(
        iter(with_stream), None
    )
    if chosen is None or chosen.stream_url is None:
        return None
    return StreamTarget(chosen.stream_url, chosen.addr, chosen.id)


class StreamLink:
    """The stream session to one beacon, and when to try UDP again.

    Args:
        key: the node's Ed25519 identity key (signs the hello).
        on_datagram: gets every message from the beacon (``06|src|frame``).
        retry_interval: first wait before UDP is tried again (doubles).
        retry_max: the longest wait.
        ca_file: a CA bundle for ``wss://`` (default: the system's).
    """

    def __init__(
        self,
        key: Ed25519PrivateKey,
        on_datagram: Callable[[bytes], None],
        *,
        retry_interval: float,
        retry_max: float,
        ca_file: str = "",
    ) -> None:
        self._key = key
        self._on_datagram = on_datagram
        self.retry_interval = retry_interval
        self.retry_max = retry_max
        self._ssl = ssl.create_default_context(cafile=ca_file) if ca_file else None
        self.client: StreamRelayClient | None = None
        self.target: StreamTarget | None = None
        self.beacon_addr: Addr | None = None
        self.attached_at: float | None = None
        self.next_udp_try = 0.0
        self._backoff = retry_interval
        self.attaches = 0
        self.last_error = ""

    @property
    def open(self) -> bool:
        """Is a session up?"""
        return self.client is not None and not self.client.closed

    async def attach(self, target: StreamTarget, node_id: int, now: float) -> bool:
        """Open a session to ``target``; False (with :attr:`last_error`) when it fails."""
        await self.detach()
        client = StreamRelayClient(
            target.url,
            node_id,
            self._key,
            self._on_datagram,
            ssl=self._ssl,
            beacon_id=target.beacon_id,
        )
        try:
            await client.connect()
        except StreamRelayError as exc:
            self.last_error = str(exc)
            _log.warning("stream_attach_failed", extra={"url": target.url, "error": str(exc)})
            return False
        host, port = split_host_port(target.beacon)
        self.client, self.target = client, target
        self.beacon_addr = (host, port)
        self.attached_at = now
        self.attaches += 1
        self._backoff = self.retry_interval
        self.next_udp_try = now + self._backoff
        _log.info("stream_attached", extra={"url": target.url, "beacon": target.beacon})
        return True

    async def detach(self) -> None:
        """Close the session, if any."""
        client, self.client = self.client, None
        self.attached_at = None
        if client is not None:
            await client.close()

    def udp_try_due(self, now: float) -> bool:
        """Time to ask the beacons over UDP again? (Advances the backoff when it is.)"""
        if now < self.next_udp_try:
            return False
        self._backoff = min(self._backoff * 2, self.retry_max)
        self.next_udp_try = now + self._backoff
        return True

    def send(self, data: bytes) -> bool:
        """Hand one datagram for the beacon to the stream; False when it is not a
        relay frame or no session is up (the caller sends it over UDP then)."""
        client = self.client
        if client is None or client.closed or not data or data[0] != MSG_RELAY:
            return False
        client.send(data)
        return True


class Transports:
    """Moving the sidecar between UDP and the stream (mixed into the sidecar)."""

    # provided by the sidecar
    settings: Settings
    clock: Callable[[], float]
    manager: Manager
    engine: Engine
    selection: BeaconSelectionState
    registry: RegistryLink
    stream: StreamLink
    relay_only: bool
    _republish: bool
    _switching: bool

    if TYPE_CHECKING:  # the sidecar provides these

        def flush(self) -> None: ...

        def beacon_keepalive(self) -> None: ...

        async def _check_nat(self) -> None: ...

        def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None: ...

    def _stream_upkeep(self) -> bool:
        """While on the stream: UDP retries and re-attaching. True when on the stream."""
        if self.engine.transport is not Transport.STREAM:
            return False
        now = self.clock()
        answered = max(self.engine.observer.last_reply.values(), default=None)
        attached = self.stream.attached_at
        if answered is not None and attached is not None and answered > attached:
            self._spawn(self.use_udp("a beacon answered over UDP"), "transport")
            return True
        if self.stream.udp_try_due(now):
            for beacon, addr in self.engine.beacons.items():
                self.engine.send_discover(beacon, addr, now)
            self.flush()
        if not self.stream.open and not self._switching:
            self._spawn(self.use_stream("the stream session ended"), "transport")
        return True

    async def use_stream(self, why: str) -> None:
        """Attach to a beacon's stream relay and relay every peer through it."""
        node_id = self.engine.node_id
        if node_id is None or self._switching:
            return
        self._switching = True
        try:
            target = await pick_stream_target(
                self.registry.client, self.selection.get_current_pick(), self.settings.beacon_stream
            )
            if target is None:
                _log.warning(
                    "no_stream_relay",
                    extra={
                        "reason": why,
                        "hint": "no beacon lists a stream_url; set --beacon-stream",
                    },
                )
                return
            if not await self.stream.attach(target, node_id, self.clock()):
                return
            assert self.stream.beacon_addr is not None
            self.manager.set_beacon_addr_udp(self.stream.beacon_addr)
            self.engine.set_transport(Transport.STREAM, self.clock())
            self.relay_only = True
            self._republish = True
            _log.warning(
                "transport_changed",
                extra={"transport": "stream", "reason": why, "url": target.url},
            )
        finally:
            self._switching = False

    async def use_udp(self, why: str) -> None:
        """UDP works again: close the stream, check the NAT, let the paths' checks run."""
        if self._switching:
            return
        self._switching = True
        try:
            await self.stream.detach()
            self.engine.set_transport(Transport.UDP, self.clock())
            self.relay_only = False
            await self._check_nat()
            self._republish = True
            _log.warning("transport_changed", extra={"transport": "udp", "reason": why})
            self.flush()
        finally:
            self._switching = False
        self.beacon_keepalive()
