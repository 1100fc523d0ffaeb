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
:meth:`Sidecar.flush` after every input. Blocking work (DNS, the refresh
tick's registry call, file writes) runs in worker threads; the engine is
touched only on the loop thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from natroute.beacon.auth import sign_discover
from natroute.registry.client import RegistryClient, RegistryClientError
from natroute.routing.addr import format_addr, split_host_port
from natroute.routing.constants import BEACON_REFRESH_JITTER, RTT_PROBE_TIMEOUT
from natroute.routing.discover import probe_beacon_rtt
from natroute.routing.errors import RoutingError
from natroute.routing.manager import Manager
from natroute.routing.refresh import RefreshOutcome, refresh_tick
from natroute.routing.resolve import resolve_udp_addr
from natroute.routing.selection import (
    BeaconSelectionState,
    compute_refresh_decision,
    initial_jitter,
    parse_beacon_list,
)
from natroute.routing.types import Addr

from .beacons import BeaconHealth, QuarantineLister, probe_alive
from .candidates import Candidate, CandidateKind, SelfAddrs
from .engine import Engine
from .identity import NodeState, load_or_create_identity
from .interfaces import host_candidates, local_ips
from .model import NatType, PeerInfo, Transport
from .nat import local_addr_towards
from .observer import Observer, Outcome
from .registrylink import Publication, RegistryLink
from .settings import Settings
from .transport import StreamLink, pick_stream_target
from .udp import AppEndpoint, DatagramPump, PeerSocket, bind_udp

__all__ = ["Sidecar", "SidecarError"]

_log = logging.getLogger(__name__)


class SidecarError(Exception):
    """The sidecar cannot start (bad configuration, an address in use, no registry)."""


def _parse_endpoint(text: str | None) -> Addr | None:
    if not text:
        return None
    try:
        host, port = split_host_port(text)
    except ValueError:
        return None
    return (host, port) if host and port else None


def _bind(setting: str, value: str, *, recverr: bool = False) -> socket.socket:
    try:
        return bind_udp(value, recverr=recverr)
    except OSError as exc:
        raise SidecarError(
            f"cannot bind {setting} {value}: {exc.strerror or exc} "
            f"(set --{setting.replace('_', '-')} / NATROUTE_SIDECAR_{setting.upper()})"
        ) from exc


class Sidecar:
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
        )
        self.nat_type = NatType.UNKNOWN
        self.public_endpoint: Addr | None = _parse_endpoint(settings.advertise)
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
        self._tasks: set[asyncio.Task[Any]] = set()
        self.registry = RegistryLink(
            settings.registry_url,
            self.identity.ed25519,
            self.identity.x25519_public,
            self.engine.lookups.config.max_in_flight,
        )
        self._registry_sync = RegistryClient(settings.registry_url)
        self.health = BeaconHealth(clock, settings.beacon_dead_after, settings.beacon_quarantine)
        self._lister = QuarantineLister(self._registry_sync, self.health)
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

    @property
    def nat_observations(self) -> dict[str, Addr]:
        """What each beacon saw of the peer socket in the latest NAT check."""
        verdict = self.engine.observer.verdict
        return dict(verdict.observations) if verdict is not None else {}

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
        bound = self._sock.getsockname()
        self.bound_addr = (str(bound[0]), int(bound[1]))
        ips = await asyncio.to_thread(local_ips)
        self.self_addrs.set_local_ips(ips)
        self.self_addrs.add(self.bound_addr)
        app_name = app_sock.getsockname()
        self.self_addrs.add((str(app_name[0]), int(app_name[1])))
        _log.info("sidecar_starting", extra={"listen": format_addr(self.bound_addr)})
        self._peer_socket = PeerSocket(self._sock, self._on_icmp)
        pump = DatagramPump(self._sock, self._on_datagram, self._on_socket_error)
        pump.start()
        self._pumps.append(pump)
        app = AppEndpoint(
            app_sock,
            self._on_app,
            _parse_endpoint(s.app_deliver),
            is_self=self.self_addrs.__contains__,
            clock=self.clock,
        )
        app.start()
        self._pumps.append(app)
        self.app = app
        self.app_addr = app.addr
        self._host_candidates = self._gather_host_candidates(ips)
        await self.refresh_now()
        if not self.selection.get_current_pick():
            await asyncio.to_thread(self._pick_from_bootstrap)
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
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for pump in self._pumps:
            pump.close()
        if not self._pumps and self._sock is not None:
            self._sock.close()
        self._pumps.clear()
        await self.registry.close()
        self._registry_sync.close()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=f"sidecar-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _every(self, interval: float, fn: Callable[[], object]) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                fn()
            except Exception:
                _log.exception("timer_failed", extra={"timer": getattr(fn, "__name__", "?")})

    @property
    def task_count(self) -> int:
        """The sidecar's own asyncio tasks (timers and look-up workers)."""
        return len(self._tasks) + len(self.registry._tasks)

    # -- the engine's inputs and outputs --------------------------------------------

    def _on_datagram(self, data: bytes, src: Addr) -> None:
        self.engine.datagram_received(data, src, self.clock())
        self.flush()

    def _on_stream_datagram(self, data: bytes) -> None:
        src = self.stream.beacon_addr
        if src is not None:  # it comes from the beacon, as a UDP datagram from it would
            self.engine.datagram_received(data, src, self.clock())
            self.flush()

    def _on_app(self, dst: int, payload: bytes) -> None:
        self.engine.app_send(dst, payload, self.clock())
        self.flush()

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
        """Send what the engine queued, deliver its payloads, start its look-ups."""
        engine = self.engine
        sock = self._peer_socket
        while True:
            out = engine.datagrams_to_send()
            if not out:
                break
            stream = self.stream
            for data, addr in out:
                if stream.open and addr == stream.beacon_addr and stream.send(data):
                    continue
                if sock is None:
                    continue
                try:
                    sock.sendto(data, addr)
                except OSError as exc:
                    engine.send_failed(addr, exc, self.clock())
        deliveries = engine.deliveries()
        app = self.app
        if app is not None:
            for src, payload in deliveries:
                app.deliver(src, payload)
        starting = engine.lookups_to_start(self.clock())
        if starting:
            self.registry.look_up(starting)
        if engine.endpoint_changes:
            self._endpoint_changed()

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
            listed = [_parse_endpoint(a) for a in parse_beacon_list(s.lan_addrs)]
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

    # -- NAT ----------------------------------------------------------------------

    async def _check_nat(self) -> None:
        """Classify the NAT through two beacons; update relay_only and the candidates."""
        s = self.settings
        if not s.nat_detect:
            beacons = self._beacon_candidates()[:1]
        else:
            beacons = self._beacon_candidates()[:2]
        resolved: list[tuple[str, Addr]] = []
        for beacon in beacons:
            try:
                addr = await asyncio.to_thread(resolve_udp_addr, beacon, socket.AF_INET)
            except RoutingError as exc:
                _log.warning("beacon_unresolvable", extra={"beacon": beacon, "error": str(exc)})
                continue
            resolved.append((beacon, addr))
            self.engine.beacons[beacon] = addr
        if not resolved:
            return
        observer = self.engine.observer
        if self.local_addr is None and self.bound_addr is not None:
            self.local_addr = await asyncio.to_thread(
                local_addr_towards, resolved[0][1], self.bound_addr[1]
            )
            observer.local = self.local_addr
        verdict = None
        for _attempt in range(2):
            self.engine.check_nat(resolved, self.clock())
            self.flush()
            deadline = self.clock() + s.discover_timeout
            while observer.checking and self.clock() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            verdict = observer.finish_check(self.clock()) if observer.checking else observer.verdict
            if verdict is not None and verdict.observations:
                break
        self._apply_verdict(verdict.nat_type if verdict is not None else NatType.UNKNOWN)

    def _apply_verdict(self, nat_type: NatType) -> None:
        old = self.nat_type
        self.nat_type = nat_type
        self.engine.set_nat_type(nat_type)
        s = self.settings
        relay_only = (
            s.relay_only if s.relay_only is not None else (nat_type is NatType.ENDPOINT_DEPENDENT)
        )
        if relay_only != self.relay_only:
            self._republish = True
        self.relay_only = relay_only
        if self.public_endpoint is None and not s.advertise:
            self.public_endpoint = self.engine.observer.endpoint
        self.engine.set_local_candidates(self.candidates())
        log = _log.warning if old not in (NatType.UNKNOWN, nat_type) else _log.info
        log(
            "nat_classified",
            extra={
                "nat_type": nat_type.value,
                "previous": old.value,
                "observed": {k: format_addr(v) for k, v in self.nat_observations.items()},
                "relay_only": self.relay_only,
            },
        )

    # -- beacons ------------------------------------------------------------------

    def _probe_rtts(self, addrs: list[str]) -> dict[str, float]:
        def probe(addr: str) -> tuple[str, float | None]:
            try:
                return addr, probe_beacon_rtt(addr, 0, RTT_PROBE_TIMEOUT)
            except RoutingError:
                return addr, None

        with ThreadPoolExecutor(max_workers=min(16, len(addrs))) as pool:
            results = list(pool.map(probe, addrs))
        return {a: t for a, t in results if t is not None}

    async def refresh_now(self) -> RefreshOutcome:
        """Run one beacon refresh tick now (the routing core's refresh_tick)."""
        async with self._refresh_lock:
            await self._release_revived_beacons()
            first = not self._first_tick_done
            view = self.health.view(self.selection)
            outcome = await asyncio.to_thread(
                refresh_tick,
                view,
                self.manager,
                self._lister,
                self.identity.ed25519_public,
                self.settings.identity,
                first_tick=first,
                prober=self._probe_rtts if self.settings.beacon_rtt_probe else None,
            )
            self._first_tick_done = True
            if outcome.decision is not None:
                self.health.commit(self.selection, outcome.decision, outcome.swapped)
            self.health.picked(self.selection.get_current_pick())
            self.last_refresh = outcome
            self.last_refresh_at = self.clock()
            log = _log.warning if outcome.errors else _log.info
            log(
                "beacon_refresh",
                extra={
                    "source": outcome.source.value,
                    "pick": self.selection.get_current_pick(),
                    "reason": outcome.reason.value,
                    "swapped": outcome.swapped,
                    "beacons": outcome.decision.new_list if outcome.decision else [],
                    "errors": list(outcome.errors),
                },
            )
            pick = self.selection.get_current_pick()
            beacon = self.manager.beacon_addr()
            if pick and beacon is not None:
                self.engine.beacons[pick] = beacon
            if outcome.swapped and self.engine.node_id is not None:
                self.beacon_keepalive()
            return outcome

    async def _refresh_loop(self) -> None:
        # start() ran the first tick; the jitter spreads the fleet's later ticks.
        s = self.settings
        await asyncio.sleep(initial_jitter() * s.refresh_jitter / BEACON_REFRESH_JITTER)
        while True:
            await asyncio.sleep(s.refresh_interval)
            try:
                await self.refresh_now()
                if s.nat_detect:
                    await self._check_nat()
            except Exception:
                _log.exception("beacon_refresh_failed")

    def _pick_from_bootstrap(self) -> None:
        """No list from the registry or the cache: pick among the configured beacons."""
        decision = compute_refresh_decision(self.selection, [], self.identity.ed25519_public)
        if not decision.new_pick:
            _log.warning("no_beacon", extra={"reason": "no registry list, cache or bootstrap"})
            return
        try:
            self.manager.set_beacon_addr(decision.new_pick)
        except RoutingError as exc:
            _log.warning(
                "beacon_unresolvable", extra={"beacon": decision.new_pick, "error": str(exc)}
            )
            return
        self.selection.apply_refresh_decision(decision)
        self.health.picked(decision.new_pick)
        _log.info("beacon_picked_from_bootstrap", extra={"beacon": decision.new_pick})

    async def _release_revived_beacons(self) -> None:
        """Probe quarantined beacons that are due; release those that answer."""
        for addr in self.health.due_for_probe():
            probe = partial(probe_beacon_rtt, node_id=0, timeout=1.0)
            if await asyncio.to_thread(probe_alive, probe, addr):
                _log.info("beacon_revived", extra={"beacon": addr})
                self.health.release(addr)

    # -- transports -------------------------------------------------------------

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

    def _check_beacon_alive(self) -> None:
        """Fail over when the current beacon stopped answering keepalives; move to the
        stream when no beacon has answered over UDP for ``stream_after`` seconds."""
        pick = self.selection.get_current_pick()
        replied = self.engine.observer.last_reply.get(pick)
        if replied is not None:
            self.health.replied(replied)
        answered = max(self.engine.observer.last_reply.values(), default=self.started_at)
        if (
            self.settings.stream
            and self.clock() - answered > self.settings.stream_after
            and not self._switching
        ):
            self._spawn(
                self.use_stream(
                    f"no UDP answer from any beacon for {self.settings.stream_after:g} s"
                ),
                "transport",
            )
            return
        if not self.health.is_dead() or self._refresh_lock.locked():
            return
        dead = self.health.mark_dead()
        _log.warning("beacon_dead", extra={"beacon": dead, "silent_for": self.health.dead_after})
        self._spawn(self._failover(), "failover")

    async def _failover(self) -> None:
        outcome = await self.refresh_now()
        _log.warning(
            "beacon_failover",
            extra={"pick": self.selection.get_current_pick(), "swapped": outcome.swapped},
        )

    def beacon_keepalive(self) -> None:
        """Register with the beacon (a signed Discover): endpoint record and NAT keepalive.

        On the stream: try UDP again when due, and re-attach a session that ended.
        """
        if self._stream_upkeep():
            return
        self._check_beacon_alive()
        beacon = self.manager.beacon_addr()
        node_id = self.engine.node_id
        if beacon is None or node_id is None:
            return
        extra = sign_discover(self.identity.ed25519, node_id, int(self.wall_clock()))
        pick = self.selection.get_current_pick() or format_addr(beacon)
        self.engine.send_discover(pick, beacon, self.clock(), extra)
        self.flush()

    def _beacon_candidates(self) -> list[str]:
        _, current, pick = self.selection.snapshot()
        rest = [b for b in current if b != pick]
        return ([pick] if pick else []) + rest

    # -- operator helpers ---------------------------------------------------------

    @property
    def icmp_errors_attributed(self) -> int:
        """ICMP errors read from the error queue and charged to the address they concern."""
        return self._peer_socket.errors_attributed if self._peer_socket is not None else 0

    @property
    def uptime(self) -> float:
        """Seconds since the sidecar was created."""
        return self.clock() - self.started_at
