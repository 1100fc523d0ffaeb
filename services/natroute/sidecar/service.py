"""The sidecar process: sockets, start-up, timers; the engine does the deciding.

Start-up, in order, each step logged (docs/protocol.md, "Start-up"):

1. identity keys and node state from disk (created on first start);
2. every socket is bound (peer socket, data plane), so a taken address fails
   before anything is registered; the receive loops start;
3. the first beacon refresh tick (registry list, or the on-disk cache when
   the registry is down, or the bootstrap list);
4. a NAT check through two beacons from the peer socket: our public endpoint
   and the mapping behaviour;
5. registration at the registry with our candidates (``relay_only`` behind an
   endpoint-dependent NAT, as a hint: peers start on the relay but still
   probe), or the remembered node ID when the registry is down;
6. timers: engine upkeep, beacon keepalives (signed discovers), registry
   heartbeats, the beacon refresh loop with a NAT re-check each time.

The shell only moves bytes and time: every datagram and payload goes
through :class:`~.engine.Engine`, whose outputs are drained by
:meth:`Sidecar.flush` after every input. The beacon refresh runs on the loop
too (:mod:`.refresh`: the registry call awaited, names looked up with
``loop.getaddrinfo``, RTT probes on asyncio UDP); only small blocking calls
(the beacon cache's file I/O, listing the host's addresses) go to worker
threads, and none of them touches the engine, the Manager or the selection
state, which live on the loop thread.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable, Coroutine
from typing import Any

from natroute._service.tasks import cancel_and_wait, every
from natroute._service.udp import size_buffers
from natroute.beacon.batchio import BatchSocket
from natroute.registry.client import RegistryClientError
from natroute.routing.addr import format_addr, parse_endpoint, split_host_port
from natroute.routing.manager import Manager
from natroute.routing.refresh import RefreshOutcome
from natroute.routing.selection import (
    BeaconSelectionState,
    parse_beacon_list,
)
from natroute.routing.types import Addr

from .beacons import BeaconHealth, QuarantineLister
from .candidates import Candidate, CandidateKind, SelfAddrs
from .engine import Engine
from .identity import NodeState, load_or_create_identity
from .interfaces import host_candidates, local_ips
from .keeper import BeaconKeeping
from .model import NatType, PeerInfo, Transport
from .observer import Observer, Outcome
from .registrylink import Publication, RegistryLink
from .settings import Settings
from .sprays import SpraySockets
from .transport import StreamLink, Transports
from .udp import AppEndpoint, DatagramPump, PeerSocket, bind_udp

__all__ = ["Sidecar", "SidecarError"]

_log = logging.getLogger(__name__)


class SidecarError(Exception):
    """The sidecar cannot start (bad configuration, an address in use, no registry)."""


def _bind(setting: str, value: str, *, recverr: bool = False) -> socket.socket:
    try:
        return bind_udp(value, recverr=recverr)
    except OSError as exc:
        raise SidecarError(
            f"cannot bind {setting} {value}: {exc.strerror or exc} "
            f"(set --{setting.replace('_', '-')} / NATROUTE_SIDECAR_{setting.upper()})"
        ) from exc


class Sidecar(BeaconKeeping, Transports):
    """One node: the Manager, the engine, the sockets, the timers.

    Args:
        settings: the sidecar's settings.
        clock: monotonic seconds (Manager and engine).
        wall_clock: Unix seconds (signed discovers, epochs).
        admin_addr: the admin API's bound address (never a destination).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        admin_addr: Addr | None = None,
    ) -> None:
        if not settings.registry_url:
            raise SidecarError("a registry URL is required (--registry-url)")
        self.settings = settings
        self.clock = clock
        self.wall_clock = wall_clock
        self.identity = load_or_create_identity(settings.identity)
        self.state = NodeState(settings.identity)
        self.manager = Manager(clock, settings.manager_config())
        self.selection = BeaconSelectionState(parse_beacon_list(settings.beacons))
        self.self_addrs = SelfAddrs([admin_addr] if admin_addr else [])
        self.engine = Engine(
            self.manager,
            settings.node_config(),
            self_addrs=self.self_addrs,
            observer=Observer(reply_window=settings.discover_timeout),
            predict=settings.predict_config(),
        )
        self.sprays = SpraySockets(
            split_host_port(settings.listen)[0],
            self._on_spray_datagram,
            self.flush,
            self.self_addrs,
            limit=settings.predict_sockets + settings.predict_max_kept,
        )
        self.nat_type = NatType.UNKNOWN
        self.public_endpoint: Addr | None = parse_endpoint(settings.advertise)
        self.local_addr: Addr | None = None
        self.bound_addr: Addr | None = None
        self.relay_only = False
        self.last_refresh: RefreshOutcome | None = None
        self.last_refresh_at: float | None = None
        self.started_at = clock()
        self.started = False
        self.app: AppEndpoint | None = None
        self.app_addr: Addr | None = None
        self._sock: socket.socket | None = None
        self._peer_socket: PeerSocket | None = None
        self._pumps: list[DatagramPump | AppEndpoint] = []
        self._peer_batch: BatchSocket | None = None
        #: (receive, send) buffer bytes the kernel granted the peer socket (0: not asked).
        self.socket_buffers = (0, 0)
        self._tasks: set[asyncio.Task[Any]] = set()
        self.registry = RegistryLink(
            settings.registry_url,
            self.identity.ed25519,
            self.identity.x25519_public,
            self.engine.lookups.config.max_in_flight,
        )
        self.health = BeaconHealth(clock, settings.beacon_dead_after, settings.beacon_quarantine)
        self._lister = QuarantineLister(self.registry.client, self.health)
        self.stream = StreamLink(
            self.identity.ed25519,
            self._on_stream_datagram,
            retry_interval=settings.udp_retry_interval,
            retry_max=settings.udp_retry_max_interval,
            ca_file=settings.stream_ca_file,
        )
        self._last_udp_answer = clock()
        self._switching = False
        self._host_candidates: list[Candidate] = []
        self._name = settings.node_name()
        self._refresh_lock = asyncio.Lock()
        self._first_tick_done = False
        self._republish = False

    # -- views ------------------------------------------------------------------

    @property
    def node_id(self) -> int | None:
        """Our node ID once known."""
        return self.engine.node_id

    @property
    def registered(self) -> bool:
        """Did the registry accept our registration (this run)?"""
        return self.registry.registered

    @property
    def transport(self) -> Transport:
        """How the node reaches its beacon now."""
        return self.engine.transport

    @property
    def ready(self) -> bool:
        """Can this node deliver: start-up done and the beacon answers (or the stream is up)."""
        if not self.started or self.engine.node_id is None:
            return False
        if self.engine.transport is Transport.STREAM:
            return self.stream.open
        return not self.health.is_dead()

    # -- lifecycle --------------------------------------------------------------

    async def __aenter__(self) -> Sidecar:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Run start-up steps 2-6; returns once traffic can flow."""
        s = self.settings
        engine = self.engine
        self._sock = _bind("listen", s.listen, recverr=True)
        app_sock = _bind("app_listen", s.app_listen)
        if s.udp_buffer:
            self.socket_buffers = size_buffers(self._sock, s.udp_buffer)
            size_buffers(app_sock, s.udp_buffer)
        bound = self._sock.getsockname()
        self.bound_addr = (str(bound[0]), int(bound[1]))
        ips = await asyncio.to_thread(local_ips)
        self.self_addrs.set_local_ips(ips)
        self.self_addrs.add(self.bound_addr)
        app_name = app_sock.getsockname()
        self.self_addrs.add((str(app_name[0]), int(app_name[1])))
        _log.info(
            "sidecar_starting",
            extra={
                "listen": format_addr(self.bound_addr),
                "socket_buffers": {"rcv": self.socket_buffers[0], "snd": self.socket_buffers[1]},
            },
        )
        self._peer_socket = PeerSocket(self._sock, self._on_icmp)
        # the engine's outputs are flushed once per batch of datagrams read
        pump = DatagramPump(
            self._sock,
            self._on_datagram,
            self._on_socket_error,
            on_batch_end=self.flush,
            on_datagrams=self._on_datagrams,
        )
        pump.start(batched=s.udp_batch)
        self._peer_batch = pump.batched
        self._pumps.append(pump)
        app = AppEndpoint(
            app_sock,
            self._on_app,
            parse_endpoint(s.app_deliver),
            is_self=self.self_addrs.__contains__,
            clock=self.clock,
            on_batch_end=self.flush,
            on_send_many=self._on_app_many,
        )
        app.start(batched=s.udp_batch)
        self._pumps.append(app)
        self.app = app
        self.app_addr = app.addr
        self._host_candidates = self._gather_host_candidates(ips)
        await self.refresh_now()
        if not self.selection.get_current_pick():
            await self._pick_from_bootstrap()
        await self._check_nat()
        udp_silent = not self.engine.observer.observations
        if udp_silent and s.stream:
            self.relay_only = True  # no beacon answered over UDP: relay everything
        node_id = await self._register_initial()
        self.state.set_node_id(node_id)
        epoch = self.state.next_epoch(int(self.wall_clock() * 1e9))
        engine.set_identity(node_id, self.identity.x25519, epoch)
        self.registry.start(self._on_resolved, self._on_resolve_failed)
        if udp_silent and s.stream:
            await self.use_stream("no beacon answered over UDP")
        self.beacon_keepalive()
        self._spawn(self._every(s.tick_interval, self._tick), "tick")
        self._spawn(self._every(s.beacon_keepalive_interval, self.beacon_keepalive), "keepalive")
        self._spawn(self._heartbeat_loop(), "heartbeat")
        self._spawn(self._refresh_loop(), "refresh")
        self.started = True
        _log.info(
            "sidecar_ready",
            extra={
                "node_id": node_id,
                "nat_type": self.nat_type.value,
                "public_endpoint": format_addr(self.public_endpoint)
                if self.public_endpoint
                else None,
                "candidates": [format_addr(c.addr) for c in self.candidates()],
                "beacon": self.selection.get_current_pick(),
                "relay_only": self.relay_only,
                "registered": self.registered,
                "app": format_addr(app.addr),
            },
        )

    async def stop(self) -> None:
        """Cancel the timers, close sockets and clients."""
        self.started = False
        await self.stream.detach()
        await cancel_and_wait(self._tasks)
        for pump in self._pumps:
            pump.close()
        self.sprays.close_all()
        if not self._pumps and self._sock is not None:
            self._sock.close()
        self._pumps.clear()
        await self.registry.close()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=f"sidecar-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _every(self, interval: float, fn: Callable[[], object]) -> None:
        name = getattr(fn, "__name__", "?")
        await every(interval, fn, name=name, logger=_log, event="timer_failed")

    @property
    def task_count(self) -> int:
        """The sidecar's own asyncio tasks (timers and look-up workers)."""
        return len(self._tasks) + len(self.registry._tasks)

    # -- the engine's inputs and outputs --------------------------------------------

    def _on_datagram(self, data: bytes, src: Addr) -> None:
        self.engine.datagram_received(data, src, self.clock())

    def _on_datagrams(self, items: list[tuple[bytes, Addr]]) -> None:
        self.engine.datagrams_received(items, self.clock())

    def _on_spray_datagram(self, index: int, data: bytes, src: Addr) -> None:
        self.engine.datagram_received(data, src, self.clock(), index)

    def _on_stream_datagram(self, data: bytes) -> None:
        src = self.stream.beacon_addr
        if src is not None:  # it comes from the beacon, as a UDP datagram from it would
            self.engine.datagram_received(data, src, self.clock())
            self.flush()

    def _on_app(self, dst: int, payload: bytes) -> None:
        self.engine.app_send(dst, payload, self.clock())

    def _on_app_many(self, datagrams: list[bytes]) -> None:
        self.engine.app_send_many(datagrams, self.clock())

    def _on_icmp(self, dst: Addr, err: OSError) -> None:
        self.engine.send_failed(dst, err, self.clock())

    def _on_resolved(self, info: PeerInfo) -> None:
        self.engine.resolved(info, self.clock())
        self.flush()

    def _on_resolve_failed(self, node_id: int, unknown: bool) -> None:
        self.engine.resolve_failed(node_id, unknown=unknown, now=self.clock())
        self.flush()

    def _tick(self) -> None:
        now = self.clock()
        self.engine.tick(now)
        self.flush()

    def flush(self) -> None:
        """Send what the engine queued, deliver its payloads, start its look-ups;
        open and close the spray sockets it names (port prediction)."""
        engine = self.engine
        opening = engine.sockets_to_open()
        if opening:
            engine.sockets_opened(self.sprays.open(opening), self.clock())
        # spray sockets first: a spray's GO (peer socket, through the relay) must not
        # overtake the datagrams that open the mappings it announces
        extra = engine.extra_datagrams_to_send()
        while extra:
            for index, addr, exc in self.sprays.send(extra):
                engine.send_failed(addr, exc, self.clock(), index)
            extra = engine.extra_datagrams_to_send()
        out = engine.datagrams_to_send()
        sock = self._peer_socket
        if out and sock is not None:
            stream = self.stream
            via_stream = stream.open
            beacon = stream.beacon_addr
            while out:
                if via_stream:
                    out = [(d, a) for d, a in out if not (a == beacon and stream.send(d))]
                self._send_out(sock, out)
                out = engine.datagrams_to_send()
        extra = engine.extra_datagrams_to_send()  # answers to what was just sent
        if extra:
            for index, addr, exc in self.sprays.send(extra):
                engine.send_failed(addr, exc, self.clock(), index)
        closing = engine.sockets_to_close()
        if closing:
            self.sprays.close(closing)
        deliveries = engine.deliveries()
        if deliveries and self.app is not None:
            self.app.deliver_all(deliveries)
        starting = engine.lookups_to_start(self.clock())
        if starting:
            self.registry.look_up(starting)
        if engine.endpoint_changes:
            self._endpoint_changed()

    def _send_out(self, sock: PeerSocket, out: list[tuple[bytes, Addr]]) -> None:
        """One ``sendmmsg`` for the lot where available, else one ``sendto`` each.

        A batch the kernel partly refused (a full buffer, or an ICMP error
        pending on the socket, which fails the next send once) counts what it
        lost, and the error queue is drained so each error is charged to the
        peer it concerns (IP_RECVERR).
        """
        batched = self._peer_batch
        if batched is not None and len(out) > 1:
            dropped = batched.send(out).dropped
            if dropped:
                sock.drain_errors()
                self.engine.count_send_drops(dropped)
            return
        for data, addr in out:
            try:
                sock.sendto(data, addr)
            except OSError as exc:
                self.engine.send_failed(addr, exc, self.clock())

    def _endpoint_changed(self) -> None:
        changes, self.engine.endpoint_changes = self.engine.endpoint_changes, []
        if self.settings.advertise:
            return  # the operator's endpoint wins
        for change in changes:
            if change.outcome in (Outcome.FIRST, Outcome.ADOPTED) and change.new is not None:
                self.public_endpoint = change.new
                self._republish = True
        self.engine.set_local_candidates(self.candidates())

    def _on_socket_error(self, exc: OSError) -> None:
        if self._peer_socket is not None:
            self._peer_socket.drain_errors()
            self.flush()

    # -- candidates and registry ---------------------------------------------------

    def _gather_host_candidates(self, ips: list[str]) -> list[Candidate]:
        s = self.settings
        if s.lan_addrs:
            listed = [parse_endpoint(a) for a in parse_beacon_list(s.lan_addrs)]
            return [Candidate(a, CandidateKind.HOST) for a in listed if a is not None]
        if not s.host_candidates or self.bound_addr is None:
            return []
        return host_candidates(self.bound_addr, ips)

    def candidates(self) -> list[Candidate]:
        """Our candidates: host addresses, then the public endpoint (none when we
        relay every peer by setting: a relay-only node hides its addresses)."""
        if self.settings.relay_only:
            return []
        out = list(self._host_candidates)
        if self.public_endpoint is not None and all(c.addr != self.public_endpoint for c in out):
            out.append(Candidate(self.public_endpoint, CandidateKind.SRFLX))
        return out

    def publication(self) -> Publication:
        """What we tell the registry about ourselves."""
        endpoint = None if self.settings.relay_only else self.public_endpoint
        return Publication(
            endpoint,
            tuple(self.candidates()),
            self.relay_only,
            self.engine.transport,
            self._name,
        )

    async def _register_initial(self) -> int:
        """Register; fall back to the remembered node ID, else retry."""
        delay = 1.0
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self.registry.register(self.publication())
            except RegistryClientError as exc:
                if exc.code == "name_taken" and self._name is not None:
                    _log.warning(
                        "name_taken",
                        extra={"node_name": self._name, "hint": "set --name to a free name"},
                    )
                    self._name = None  # register without a name rather than not at all
                    continue
                if self.state.node_id:
                    _log.warning(
                        "registry_unavailable_using_saved_id",
                        extra={"node_id": self.state.node_id, "error": str(exc)},
                    )
                    return self.state.node_id
                _log.warning(
                    "registry_unavailable",
                    extra={
                        "attempt": attempt,
                        "retry_in": delay,
                        "registry": self.settings.registry_url,
                        "error": str(exc),
                    },
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def _heartbeat_loop(self) -> None:
        while True:
            interval = self.settings.heartbeat_interval if self.registered else 2.0
            waited = 0.0
            while waited < interval and not self._republish:
                await asyncio.sleep(min(0.5, interval - waited))
                waited += 0.5
            node_id = self.engine.node_id
            if node_id is None:
                continue
            self._republish = False
            try:
                await self.registry.heartbeat(node_id, self.publication())
            except RegistryClientError as exc:
                _log.warning("heartbeat_failed", extra={"error": str(exc)})

    # -- operator helpers ---------------------------------------------------------

    @property
    def icmp_errors_attributed(self) -> int:
        """ICMP errors read from the error queue and charged to the address they concern."""
        return self._peer_socket.errors_attributed if self._peer_socket is not None else 0
