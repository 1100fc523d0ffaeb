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
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from natroute.registry.client import AsyncRegistryClient, RegistryClientError
from natroute.routing.addr import split_host_port
from natroute.routing.types import Addr
from natroute.routing.wire import MSG_RELAY

from .stream import StreamRelayClient, StreamRelayError

__all__ = ["StreamLink", "StreamTarget", "pick_stream_target"]

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
