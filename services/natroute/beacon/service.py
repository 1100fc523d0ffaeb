"""Runs one beacon: UDP endpoint, admin HTTP app and periodic tasks in one loop.

:class:`BeaconService` is an async context manager used by ``main()`` and by
:func:`natroute.beacon.testing.running_beacon`. It binds the UDP socket,
builds the core, serves the admin app with uvicorn on the same loop, and runs
three periodic tasks: the expiry sweep, Sync gossip to peer beacons, and the
peer refresh (resolve static peers, register with the registry and read its
beacon list; README, "Registry"). Registry and DNS failures are logged and retried
next period; they never stop the beacon.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import socket
import ssl
import time
from collections.abc import Callable
from types import TracebackType

import httpx

from natroute._service.cli import bind_failure, setting_failure
from natroute._service.run import EmbeddedHttpServer
from natroute._service.tasks import cancel_and_wait, every
from natroute._service.udp import bind_udp
from natroute.registry.client import AsyncRegistryClient
from natroute.routing.addr import format_addr, split_host_port
from natroute.routing.errors import RegistryError
from natroute.routing.types import Addr
from natroute.routing.wire import MSG_DISCOVER_REPLY, RELAY_HEADER_LEN

from .admin import create_app
from .batchio import BatchSocket
from .config import BeaconConfig
from .core import BeaconCore, Outgoing
from .early import SOCKET_BUFFER, Early, EarlyResponder
from .nodekeys import NodeKeys
from .registry import RegistryLink
from .settings import Settings, derive_beacon_id
from .stats import BeaconSnapshot
from .streamproto import STREAM_PATH
from .streams import StreamHub
from .udp import BatchedUdp, BeaconProtocol

__all__ = ["BeaconService"]

_log = logging.getLogger(__name__)
_TASK_FAILED = "beacon_task_failed"
#: How often the beacon looks for nodes new since the last gossip round (seconds).
_EARLY_GOSSIP_CHECK = 0.05


class BeaconService:
    """One running beacon. Use ``async with BeaconService(settings) as svc``."""

    def __init__(
        self,
        settings: Settings,
        *,
        config: BeaconConfig | None = None,
        clock: Callable[[], float] | None = None,
        wall_clock: Callable[[], float] = time.time,
        http_client: httpx.AsyncClient | None = None,
        early: EarlyResponder | None = None,
    ) -> None:
        """Prepare (nothing is bound until :meth:`start`).

        Args:
            settings: service settings (listen addresses, peers, registry, ...).
            config: core config to use as-is instead of one built from settings.
            clock: monotonic seconds for the core (default: the loop's clock).
            wall_clock: Unix time for signed discovers.
            http_client: client for registry calls (default: one owned here).
            early: a responder already answering on the listen address; the
                service takes its socket and its backlog over.
        """
        self.settings = settings
        self._config = config
        self._clock = clock
        self._wall_clock = wall_clock
        self._http_client = http_client
        self._owns_client = http_client is None
        self._core: BeaconCore | None = None
        self._protocol: BeaconProtocol | BatchedUdp | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._sock: socket.socket | None = None
        self._http: EmbeddedHttpServer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._registry: RegistryLink | None = None
        self._hub: StreamHub | None = None
        self.udp_addr: Addr = ("", 0)
        self.http_addr: Addr | None = None
        self.advertise = ""
        #: The stream relay URL registered (None: no stream relay, or no usable host).
        self.stream_url: str | None = None
        self._family = socket.AF_INET
        self._static_peers: tuple[str, ...] = settings.peers
        self._early = early

    # -- public view -----------------------------------------------------------

    @property
    def core(self) -> BeaconCore:
        """The running core.

        Raises:
            RuntimeError: before :meth:`start`.
        """
        if self._core is None:
            raise RuntimeError("beacon not started")
        return self._core

    @property
    def protocol(self) -> BeaconProtocol | BatchedUdp:
        """The UDP shell (e.g. to send extra datagrams in tests).

        Raises:
            RuntimeError: before :meth:`start`.
        """
        if self._protocol is None:
            raise RuntimeError("beacon not started")
        return self._protocol

    @property
    def ready(self) -> bool:
        """True while the UDP socket is bound and serving."""
        if isinstance(self._protocol, BatchedUdp):
            return not self._protocol.closed
        return self._transport is not None and not self._transport.is_closing()

    @property
    def registry(self) -> RegistryLink | None:
        """The registry link, when a registry is configured."""
        return self._registry

    @property
    def hub(self) -> StreamHub | None:
        """The stream relay's sessions, when the relay is served."""
        return self._hub

    def snapshot(self) -> BeaconSnapshot:
        """An immutable snapshot of the core and the stream relay (for the admin app)."""
        snap = self.core.snapshot()
        hub = self._hub
        if hub is None:
            return snap
        return dataclasses.replace(
            snap, stream_url=self.stream_url, stream_sessions=hub.sessions, stream=hub.snapshot()
        )

    def now(self) -> float:
        """The clock the core is fed with."""
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    # -- lifecycle -------------------------------------------------------------

    async def __aenter__(self) -> BeaconService:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Bind UDP, start the admin app (uvicorn on this loop) and the periodic tasks.

        Raises:
            StartupError: an address cannot be bound, or the TLS files cannot be used
                (the message names the setting).
        """
        loop = asyncio.get_running_loop()
        settings = self.settings
        early, self._early = self._early, None
        if early is not None and early.listen != settings.listen:
            early.close()  # bound for another address than the settings say
            early = None
        if settings.tls_cert is not None:
            _check_tls(settings.tls_cert, settings.tls_key)
        try:
            sock = (
                early.sock
                if early is not None
                else bind_udp(settings.listen, buffer_size=SOCKET_BUFFER)
            )
        except (OSError, ValueError, UnicodeError) as exc:
            raise bind_failure(Settings, "listen", settings.listen, _os_error(exc)) from exc
        self._family = sock.family
        self.udp_addr = _sockname(sock)
        self.advertise = settings.advertise or format_addr(self.udp_addr)
        config = self._config
        if config is None:
            beacon_id = settings.beacon_id or derive_beacon_id(self.advertise)
            config = settings.core_config(beacon_id)
        core = self._core = BeaconCore(config, wall_clock=self._wall_clock)
        batch = BatchSocket.create(sock, gso=settings.udp_gso) if settings.udp_batch else None
        protocol: BeaconProtocol | BatchedUdp
        if batch is not None:
            protocol = BatchedUdp(core, self.now, batch)
            self._sock = sock
        else:
            protocol = BeaconProtocol(core, self.now, settings.send_buffer_limit)
        self._protocol = protocol
        if settings.registry_url is not None:
            if self._http_client is None:
                self._http_client = httpx.AsyncClient(timeout=5.0)
            token = settings.registry_token
            client = AsyncRegistryClient(
                settings.registry_url,
                token=token.get_secret_value() if token is not None else None,
                http=self._http_client,
            )
            self._registry = RegistryLink(client, can_register=token is not None)
        if settings.stream and settings.http_listen:
            keys = None if self._registry is None else NodeKeys(self._registry.node_key, self.now)
            hub = StreamHub(core, protocol.send, self.now, settings.stream_limits(), keys)
            protocol.stream_send = hub.send
            self._hub = hub
        # The early responder stops reading before the shell starts (one reader at a
        # time); its backlog is replayed before anything the shell reads.
        backlog = early.handover()[1] if early is not None else []
        if isinstance(protocol, BatchedUdp):
            protocol.start(sock)
        else:
            self._transport, _ = await loop.create_datagram_endpoint(lambda: protocol, sock=sock)
        if early is not None:
            protocol.send(_replay(core, backlog, self.now()))
            counts = {"answered": early.replies, "dropped": early.dropped}
            _log.info("beacon_early_handover", extra=counts | {"backlog": len(backlog)})
        try:
            await self._start_http()
        except BaseException:
            await self.stop()
            raise
        self.stream_url = self._stream_url()
        await self._refresh_static_peers()
        first_peers = 0.0 if self._registry is not None else None
        timers = [
            (settings.sweep_interval, self._sweep, "sweep", None),
            (settings.gossip_interval, self._gossip, "gossip", None),
            # With a registry, the first registration at once (nodes find us in the list).
            (settings.register_interval, self.refresh_peers, "peers", first_peers),
        ]
        if config.early_gossip_spacing:
            timers.append((_EARLY_GOSSIP_CHECK, self._early_gossip, "early", None))
        if self._hub is not None:
            timers.append((settings.stream_idle_timeout / 3, self._close_idle, "idle", None))
        self._tasks = [
            asyncio.create_task(
                every(interval, work, name=name, logger=_log, event=_TASK_FAILED, first=first)
            )
            for interval, work, name, first in timers
        ]
        _log.info(
            "beacon_started",
            extra={
                "beacon_id": config.beacon_id,
                "udp_addr": format_addr(self.udp_addr),
                "http_addr": format_addr(self.http_addr) if self.http_addr else None,
                "advertise": self.advertise,
                "stream_url": self.stream_url,
                "udp_io": "batched" if batch is not None else "asyncio",
                "gso": batch is not None and batch.gso,
                "strict": config.strict,
                "registry": settings.registry_url,
                "peers": list(settings.peers),
            },
        )

    async def stop(self) -> None:
        """Stop tasks, the admin app and the UDP endpoint (idempotent)."""
        tasks, self._tasks = self._tasks, []
        await cancel_and_wait(tasks)
        if self._hub is not None:
            await self._hub.close_all()
        if self._http is not None:
            await self._http.stop()
            self._http = None
        if self._owns_client and self._http_client is not None:
            await self._http_client.aclose()
            self._http_client = None
        stopped = self._transport is not None or self._sock is not None
        if isinstance(self._protocol, BatchedUdp):
            self._protocol.close()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        if stopped:
            _log.info("beacon_stopped", extra={"beacon_id": self.core.config.beacon_id})

    async def _start_http(self) -> None:
        settings = self.settings
        if not settings.http_listen:
            return
        options: dict[str, object] = {}
        if self._hub is not None:
            options = {
                "ws_ping_interval": settings.stream_ping_interval,
                "ws_ping_timeout": settings.stream_ping_interval,
                # One relay frame: its header and the largest payload.
                "ws_max_size": RELAY_HEADER_LEN + self.core.config.max_relay_payload,
            }
        if settings.tls_cert is not None:
            options |= {"ssl_certfile": settings.tls_cert, "ssl_keyfile": settings.tls_key}
        server = EmbeddedHttpServer(create_app(self, self._hub), **options)
        try:
            self.http_addr = await server.start(settings.http_listen)
        except OSError as exc:
            raise bind_failure(Settings, "http_listen", settings.http_listen, exc) from exc
        self._http = server

    def _stream_url(self) -> str | None:
        """``advertise_stream``, else ``ws(s)://<advertised host>:<HTTP port>/v1/relay``.

        None without a stream relay, or when the advertised host is a wildcard.
        """
        settings = self.settings
        if self._hub is None or self.http_addr is None:
            return None
        if settings.advertise_stream is not None:
            return settings.advertise_stream
        host = split_host_port(self.advertise)[0]
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            ip = None
        if ip is not None and ip.is_unspecified:
            return None
        scheme = "wss" if settings.tls_cert is not None else "ws"
        netloc = format_addr((host, self.http_addr[1]))
        return f"{scheme}://{netloc}{STREAM_PATH}"

    # -- periodic work ---------------------------------------------------------

    async def _sweep(self) -> None:
        self.core.sweep(self.now())

    async def _close_idle(self) -> None:
        if self._hub is not None:
            self._hub.close_idle()

    async def _gossip(self) -> None:
        if self._protocol is not None:
            self._protocol.send(self.core.gossip_datagrams(self.now()))

    async def _early_gossip(self) -> None:
        if self._protocol is not None and self.core.new_nodes:
            self._protocol.send(self.core.early_gossip_datagrams(self.now()))

    async def gossip_now(self) -> None:
        """Send one gossip round immediately (also run every gossip interval)."""
        await self._gossip()

    async def refresh_peers(self) -> None:
        """One peer round: resolve static peers; register (with a token) and read the beacon list.

        Registry failures are logged (``beacon_registry_failed``) and leave the
        previous registry-listed peers in place.
        """
        await self._refresh_static_peers()
        registry = self._registry
        if registry is None:
            return
        beacon_id = self.core.config.beacon_id
        try:
            if registry.can_register:
                await registry.register(beacon_id, self.advertise, self.stream_url)
            listed = await registry.list_beacons()
        except RegistryError as exc:
            _log.warning("beacon_registry_failed", extra={"error": str(exc)})
            return
        others = [addr for other_id, addr in listed if other_id != beacon_id]
        resolved = await self._resolve_all(others)
        self.core.set_listed_peers(resolved)
        _log.debug("beacon_registry_refreshed", extra={"peers": [format_addr(a) for a in resolved]})

    async def set_static_peers(self, hostports: tuple[str, ...] | list[str]) -> None:
        """Replace the static peer beacons (``host:port``) and resolve them now.

        They are re-resolved every registration period, like ``--peers``.
        """
        self._static_peers = tuple(hostports)
        await self._refresh_static_peers()

    async def _refresh_static_peers(self) -> None:
        self.core.set_static_peers(await self._resolve_all(self._static_peers))

    async def _resolve_all(self, hostports: list[str] | tuple[str, ...]) -> list[Addr]:
        found = await asyncio.gather(*(self._resolve(hp) for hp in hostports))
        return [addr for addr in found if addr is not None]

    async def _resolve(self, hostport: str) -> Addr | None:
        """An IP address for a peer; IP literals need no lookup."""
        loop = asyncio.get_running_loop()
        ipv4_only = self._family == socket.AF_INET
        try:
            host, port = split_host_port(hostport)
            try:
                ip = ipaddress.ip_address(host)
            except ValueError:
                family = socket.AF_INET if ipv4_only else socket.AF_UNSPEC
                infos = await loop.getaddrinfo(host, port, family=family, type=socket.SOCK_DGRAM)
                return str(infos[0][4][0]), int(infos[0][4][1])
            if ipv4_only and ip.version == 6 and ip.ipv4_mapped is None:
                raise OSError("IPv6 peer, but the UDP socket is IPv4")
            return str(ip), port
        except (OSError, ValueError, UnicodeError) as exc:
            _log.warning("beacon_peer_unresolved", extra={"peer": hostport, "error": str(exc)})
            return None


def _replay(core: BeaconCore, backlog: list[Early], now: float) -> list[Outgoing]:
    """Feed the early responder's backlog to the core, in order.

    Discovers it answered are recorded now; their second DiscoverReply (the
    only 0x02 the core sends) is left out.
    """
    out: list[Outgoing] = []
    reply = bytes((MSG_DISCOVER_REPLY,))
    for data, src, answered in backlog:
        replies = core.handle_datagram(data, src, now)
        out.extend(r for r in replies if not (answered and r[0][:1] == reply))
    return out


def _check_tls(cert: str, key: str | None) -> None:
    """Load the certificate and key once, so a bad file stops the start with its setting named.

    Raises:
        StartupError: a file is missing, unreadable or not a matching PEM pair.
    """
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
        raise setting_failure(
            Settings,
            "tls_cert",
            f"{cert} with key {key}",
            "cannot use the TLS certificate",
            f"{reason}; give a readable PEM certificate and its private key "
            "(--tls-key / NATROUTE_BEACON_TLS_KEY)",
        ) from exc


def _os_error(exc: Exception) -> OSError:
    """A resolve or parse error as an OSError for :func:`bind_failure`."""
    return exc if isinstance(exc, OSError) else OSError(str(exc))


def _sockname(sock: socket.socket) -> Addr:
    name = sock.getsockname()
    return str(name[0]), int(name[1])
