"""The sidecar process: start-up (spec §7.1), timers, registry and beacon upkeep.

Start-up, in order, each step logged:

1. identity keys and node state from disk (created on first start);
2. the node's UDP socket; the first beacon refresh tick (registry list, or
   the on-disk cache when the registry is down; spec §5.12);
3. endpoint discovery through two beacons on that same socket, which also
   classifies the NAT (endpoint-independent vs endpoint-dependent mapping);
4. registration at the registry (node ID; ``relay_only`` behind a symmetric
   NAT), or the remembered node ID when the registry is down;
5. the receive loop, the data plane, beacon registration, and the timers:
   peer upkeep, beacon keepalive (signed discovers), registry heartbeat, the
   beacon refresh loop.

Blocking work (discovery, the sync registry call of a refresh tick, file
writes) runs in worker threads; the Node is touched only on the loop thread.
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
from natroute.registry.client import (
    AsyncRegistryClient,
    RegistryClient,
    RegistryClientError,
    RegistryNotFoundError,
)
from natroute.routing.addr import format_addr, split_host_port
from natroute.routing.constants import BEACON_REFRESH_JITTER, RTT_PROBE_TIMEOUT
from natroute.routing.discover import probe_beacon_rtt
from natroute.routing.errors import RoutingError
from natroute.routing.manager import Manager
from natroute.routing.refresh import RefreshOutcome, refresh_tick
from natroute.routing.selection import (
    BeaconSelectionState,
    compute_refresh_decision,
    initial_jitter,
    parse_beacon_list,
)
from natroute.routing.types import Addr
from natroute.routing.wire import Discover, encode_message

from .beacons import BeaconHealth, QuarantineLister, probe_alive
from .identity import NodeState, load_or_create_identity
from .nat import detect_nat
from .node import NatType, Node, PeerInfo
from .settings import Settings
from .udp import AppEndpoint, DatagramPump, PeerSocket, bind_udp

__all__ = ["Sidecar", "SidecarError"]

_log = logging.getLogger(__name__)


class SidecarError(Exception):
    """The sidecar cannot start (bad configuration, no registry and no node ID)."""


def _parse_endpoint(text: str | None) -> Addr | None:
    if not text:
        return None
    try:
        host, port = split_host_port(text)
    except ValueError:
        return None
    return (host, port) if host and port else None


class Sidecar:
    """One node: the Manager, the Node, the sockets, the timers.

    Args:
        settings: the sidecar's settings.
        clock: monotonic seconds (Manager and Node).
        wall_clock: Unix seconds (signed discovers).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
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
        self.node: Node | None = None
        self.nat_type = NatType.UNKNOWN
        self.nat_observations: dict[str, Addr] = {}
        self.public_endpoint: Addr | None = None
        self.local_addr: Addr | None = None
        self.bound_addr: Addr | None = None
        self.registered = False
        self.relay_only = False
        self.last_refresh: RefreshOutcome | None = None
        self.last_refresh_at: float | None = None
        self.started_at = clock()
        self.ready = False
        self.app: AppEndpoint | None = None
        self.app_addr: Addr | None = None
        self._sock: socket.socket | None = None
        self._peer_socket: PeerSocket | None = None
        self._pumps: list[DatagramPump | AppEndpoint] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._registry = AsyncRegistryClient(settings.registry_url)
        self._registry_sync = RegistryClient(settings.registry_url)
        self.health = BeaconHealth(clock, settings.beacon_dead_after, settings.beacon_quarantine)
        self._lister = QuarantineLister(self._registry_sync, self.health)
        self._resolve_slots = asyncio.Semaphore(16)
        self._refresh_lock = asyncio.Lock()
        self._first_tick_done = False

    # -- lifecycle ----------------------------------------------------------

    async def __aenter__(self) -> Sidecar:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Run start-up steps 2-5; returns once traffic can flow."""
        s = self.settings
        self._sock = bind_udp(s.listen, recverr=True)
        bound = self._sock.getsockname()
        self.bound_addr = (str(bound[0]), int(bound[1]))
        _log.info("sidecar_starting", extra={"listen": format_addr(self.bound_addr)})
        await self.refresh_now()
        if not self.selection.get_current_pick():
            await asyncio.to_thread(self._pick_from_bootstrap)
        await asyncio.to_thread(self._discover)
        node_id = await self._register_initial()
        self.state.set_node_id(node_id)
        epoch = self.state.next_epoch(time.time_ns())
        node = Node(
            self.manager,
            self,
            node_id,
            self.identity.x25519,
            epoch,
            s.node_config(),
            clock=self.clock,
        )
        self.node = node
        self._peer_socket = PeerSocket(self._sock, node.on_icmp_error)
        pump = DatagramPump(self._sock, node.datagram_received, self._on_socket_error)
        pump.start()
        self._pumps.append(pump)
        node.set_socket(self._peer_socket)
        node.set_nat_type(self.nat_type, self.relay_only)
        app = AppEndpoint(bind_udp(s.app_listen), node.send_app, _parse_endpoint(s.app_deliver))
        app.start()
        self._pumps.append(app)
        self.app = app
        self.app_addr = app.addr
        self.beacon_keepalive()
        self._spawn(self._every(s.tick_interval, node.tick), "tick")
        self._spawn(self._every(s.beacon_keepalive_interval, self.beacon_keepalive), "keepalive")
        self._spawn(self._heartbeat_loop(), "heartbeat")
        self._spawn(self._refresh_loop(), "refresh")
        self.ready = True
        _log.info(
            "sidecar_ready",
            extra={
                "node_id": node_id,
                "nat_type": self.nat_type.value,
                "public_endpoint": format_addr(self.public_endpoint)
                if self.public_endpoint
                else None,
                "beacon": self.selection.get_current_pick(),
                "relay_only": self.relay_only,
                "registered": self.registered,
                "app": f"{self.app_addr[0]}:{self.app_addr[1]}",
            },
        )

    async def stop(self) -> None:
        """Cancel the timers, close sockets and clients."""
        self.ready = False
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
        await self._registry.aclose()
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

    # -- beacons --------------------------------------------------------------

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
        """Run one beacon refresh tick (spec §5.12) now; register after a swap."""
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
            if outcome.swapped and self.node is not None:
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
            except Exception:
                _log.exception("beacon_refresh_failed")

    def _pick_from_bootstrap(self) -> None:
        """No list from the registry or the cache: pick among the configured beacons (§7.1)."""
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

    def _check_beacon_alive(self) -> None:
        """Fail over when the current beacon stopped answering keepalives."""
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
        """Register with the beacon (a signed Discover): endpoint record and NAT keepalive."""
        self._check_beacon_alive()
        beacon = self.manager.beacon_addr()
        node = self.node
        if beacon is None or node is None or self._peer_socket is None:
            return
        extra = sign_discover(self.identity.ed25519, node.node_id, int(self.wall_clock()))
        try:
            self._peer_socket.sendto(encode_message(Discover(node.node_id, extra)), beacon)
        except OSError as exc:
            _log.warning("beacon_keepalive_failed", extra={"error": str(exc)})

    def _beacon_candidates(self) -> list[str]:
        _, current, pick = self.selection.snapshot()
        rest = [b for b in current if b != pick]
        return ([pick] if pick else []) + rest

    def _discover(self) -> None:
        """Step 3: our public endpoint and NAT type, via up to two beacons (blocking)."""
        assert self._sock is not None
        s = self.settings
        report = detect_nat(
            self._sock, self._beacon_candidates(), s.discover_timeout, 2 if s.nat_detect else 1
        )
        self.nat_type = report.nat_type
        self.nat_observations = dict(report.observations)
        self.local_addr = report.local_addr
        self.public_endpoint = _parse_endpoint(s.advertise) or report.public_endpoint
        self.relay_only = (
            s.relay_only
            if s.relay_only is not None
            else self.nat_type is NatType.ENDPOINT_DEPENDENT
        )
        _log.info(
            "nat_classified",
            extra={
                "nat_type": self.nat_type.value,
                "observed": {k: format_addr(v) for k, v in self.nat_observations.items()},
                "relay_only": self.relay_only,
            },
        )

    # -- registry -------------------------------------------------------------

    def _endpoint_text(self) -> str | None:
        return format_addr(self.public_endpoint) if self.public_endpoint else None

    async def _register(self) -> int:
        reg = await self._registry.register(
            self.identity.ed25519,
            x25519_public_key=self.identity.x25519_public,
            endpoint=self._endpoint_text(),
            lan_addrs=parse_beacon_list(self.settings.lan_addrs),
            relay_only=self.relay_only,
        )
        self.registered = True
        _log.info("registered", extra={"node_id": reg.node_id, "relay_only": reg.relay_only})
        return reg.node_id

    async def _register_initial(self) -> int:
        """Step 4: register; fall back to the remembered node ID, else retry."""
        delay = 1.0
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._register()
            except RegistryClientError as exc:
                if self.state.node_id:
                    _log.warning(
                        "registry_unavailable_using_saved_id",
                        extra={"node_id": self.state.node_id, "error": str(exc)},
                    )
                    return self.state.node_id
                _log.warning(
                    "registry_unavailable",
                    extra={"attempt": attempt, "retry_in": delay, "error": str(exc)},
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval if self.registered else 2.0)
            node = self.node
            if node is None:
                continue
            try:
                if not self.registered:
                    node.node_id = await self._register()
                    self.state.set_node_id(node.node_id)
                else:
                    await self._registry.heartbeat(
                        self.identity.ed25519,
                        node.node_id,
                        endpoint=self._endpoint_text(),
                        relay_only=self.relay_only,
                    )
            except RegistryNotFoundError:
                self.registered = False
            except RegistryClientError as exc:
                _log.warning("heartbeat_failed", extra={"error": str(exc)})
            else:
                self.beacon_keepalive()

    # -- NodeIO -----------------------------------------------------------------

    def deliver(self, src: int, payload: bytes) -> None:
        """Node → application."""
        if self.app is not None:
            self.app.deliver(src, payload)

    def resolve(self, node_id: int) -> None:
        """Node asks for a registry resolve; the answer comes back on the loop."""
        self._spawn(self._resolve(node_id), f"resolve-{node_id}")

    async def _resolve(self, node_id: int) -> None:
        node = self.node
        if node is None:
            return
        async with self._resolve_slots:
            try:
                peer = await self._registry.resolve(node_id)
            except RegistryClientError as exc:
                _log.info("resolve_failed", extra={"peer": node_id, "error": str(exc)})
                node.on_resolve_failed(node_id)
                return
        if peer.x25519_public_key is None:
            _log.info("resolve_without_key", extra={"peer": node_id})
            node.on_resolve_failed(node_id)
            return
        endpoint = None if peer.relay_only else _parse_endpoint(peer.endpoint)
        node.on_resolved(PeerInfo(node_id, endpoint, peer.relay_only, peer.x25519_public_key))

    def endpoint_observed(self, addr: Addr) -> None:
        """The beacon answered a keepalive; notice a changed public endpoint."""
        self.health.replied()
        if self.public_endpoint != addr and not self.settings.advertise:
            _log.info(
                "public_endpoint_changed",
                extra={"old": self._endpoint_text(), "new": format_addr(addr)},
            )
            self.public_endpoint = addr

    def _on_socket_error(self, exc: OSError) -> None:
        if self._peer_socket is not None:
            self._peer_socket.drain_errors()

    # -- operator helpers ---------------------------------------------------------

    @property
    def icmp_errors_attributed(self) -> int:
        """ICMP errors read from the error queue and charged to the peer they concern."""
        return self._peer_socket.errors_attributed if self._peer_socket is not None else 0

    @property
    def uptime(self) -> float:
        """Seconds since the sidecar was created."""
        return self.clock() - self.started_at
