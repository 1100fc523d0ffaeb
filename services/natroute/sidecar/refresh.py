"""The beacon refresh tick on the event loop (docs/protocol.md, "Refresh tick").

The routing core's :class:`~natroute.routing.refresh.RefreshTick` makes every
decision; this module does the I/O it asks for, without blocking the loop
(docs/decisions.md D42):

* the registry's beacon list: awaited from the async registry client;
* beacon names: ``loop.getaddrinfo`` (the lookup runs in the loop's default
  executor; the loop goes on), under the routing core's rules for what a
  beacon address may be and which answer wins (``lookup_target``,
  ``pick_resolved``); the Manager then takes the address as it is
  (``set_beacon_addr_udp``), which is what ``set_beacon_addr`` does after
  its own blocking lookup ("The routing Manager");
* RTT probes: one connected asyncio UDP endpoint per beacon, all at once (at
  most :data:`PROBES_AT_ONCE` open), each timed from its send, after the
  lookup (D25);
* the cache file: ``asyncio.to_thread`` for its small read and its small
  write with fsync.

Everything the tick touches (the selection state, the Manager and the engine
behind its socket) is touched on the loop thread only, so the selection
state's lock is never contended here; it stays for the seed's threaded
callers of the blocking ``refresh_tick``.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from typing import Any, Final

from natroute.routing.cache import load_beacon_cache_entry, save_beacon_cache
from natroute.routing.discover import DISCOVER_REPLY_BUFSIZE, parse_discover_reply
from natroute.routing.errors import DiscoveryError, ResolveError, RoutingError
from natroute.routing.manager import Manager
from natroute.routing.refresh import RefreshAction, RefreshOutcome, RefreshTick
from natroute.routing.resolve import lookup_target, pick_resolved
from natroute.routing.types import Addr
from natroute.routing.wire import Discover, encode_message

__all__ = [
    "PROBES_AT_ONCE",
    "AsyncBeaconSource",
    "AsyncRttProber",
    "probe_rtt",
    "probe_rtts",
    "resolve_beacon",
    "run_refresh_tick",
]

#: Most RTT probes (sockets) open at the same time.
PROBES_AT_ONCE: Final = 16

#: The registry's beacon addresses, awaited (raises on failure).
AsyncBeaconSource = Callable[[], Awaitable[Iterable[str]]]

#: RTTs (seconds) of the beacons that answered; the others are left out.
AsyncRttProber = Callable[[list[str]], Awaitable[dict[str, float]]]


async def resolve_beacon(hostport: str, family: int = socket.AF_UNSPEC) -> Addr:
    """``resolve_udp_addr`` without blocking the loop: IPv4 preferred, port numeric.

    Raises:
        ResolveError: empty, malformed, or the name does not resolve.
    """
    host, port = lookup_target(hostport)
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(
            host, port, family=family, type=socket.SOCK_DGRAM, proto=socket.IPPROTO_UDP
        )
    except (OSError, UnicodeError) as exc:
        raise ResolveError(f"resolve beacon: {exc}") from exc
    return pick_resolved(infos, port)


class _Reply(asyncio.DatagramProtocol):
    """The first DiscoverReply on a probe's connected socket (only the beacon's
    datagrams reach it), or the ICMP error that says nobody listens."""

    def __init__(self, reply: asyncio.Future[Addr]) -> None:
        self._reply = reply

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if self._reply.done():
            return
        try:
            self._reply.set_result(parse_discover_reply(data[:DISCOVER_REPLY_BUFSIZE]))
        except DiscoveryError as exc:
            self._reply.set_exception(exc)

    def error_received(self, exc: Exception) -> None:
        if not self._reply.done():
            self._reply.set_exception(DiscoveryError(f"discover reply: {exc}"))


async def probe_rtt(beacon: str, *, reply_timeout: float, clock: Callable[[], float]) -> float:
    """``probe_beacon_rtt`` without blocking the loop: one Discover, one reply.

    The name is resolved before the clock starts (D25); the socket is
    connected to the beacon, so a datagram from anywhere else never counts
    (D15) and a port nobody listens on fails at once.

    Raises:
        ResolveError: ``beacon`` does not resolve.
        DiscoveryError: no socket, an invalid reply, an ICMP error, or no
            reply within ``reply_timeout`` seconds.
    """
    target = await resolve_beacon(beacon)
    loop = asyncio.get_running_loop()
    reply: asyncio.Future[Addr] = loop.create_future()
    try:
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Reply(reply), remote_addr=target
        )
    except OSError as exc:
        raise DiscoveryError(f"probe socket: {exc}") from exc
    try:
        start = clock()
        transport.sendto(encode_message(Discover(0)))
        async with asyncio.timeout(reply_timeout):
            await reply
        return clock() - start
    except TimeoutError as exc:
        raise DiscoveryError("discover reply: timed out") from exc
    finally:
        transport.close()


async def probe_rtts(
    addrs: list[str], *, reply_timeout: float, clock: Callable[[], float]
) -> dict[str, float]:
    """Probe every address at once (:data:`PROBES_AT_ONCE` at a time); the RTTs
    of those that answered (an :data:`AsyncRttProber`)."""
    gate = asyncio.Semaphore(PROBES_AT_ONCE)

    async def one(addr: str) -> float | None:
        async with gate:
            try:
                return await probe_rtt(addr, reply_timeout=reply_timeout, clock=clock)
            except RoutingError:
                return None

    rtts = await asyncio.gather(*(one(a) for a in addrs))
    return {a: t for a, t in zip(addrs, rtts, strict=True) if t is not None}


async def run_refresh_tick(
    tick: RefreshTick,
    manager: Manager,
    source: AsyncBeaconSource,
    prober: AsyncRttProber,
    identity_path: str,
    wall_clock: Callable[[], datetime],
) -> RefreshOutcome:
    """Do the I/O ``tick`` asks for until it is done; its outcome.

    The same steps, in the same order, as the blocking ``refresh_tick``;
    only how each is done differs.

    Args:
        tick: a fresh tick (its selection state, key, first-tick flag, probing
            switch and cache age limit are the caller's choice).
        manager: takes the resolved beacon and sends ``register_with_beacon``
            (through its socket; the caller flushes what that queued).
        source: the registry's beacon addresses.
        prober: answers the tick's RTT probes (asked only when it probes).
        identity_path: the identity file; the cache lives beside it.
        wall_clock: the time stamped into the cache and used for its age.
    """
    for step in tick:
        try:
            match step.action:
                case RefreshAction.LIST:
                    tick.listed(list(await source()))
                case RefreshAction.READ_CACHE:
                    entry = await asyncio.to_thread(load_beacon_cache_entry, identity_path)
                    tick.cache_read(entry, wall_clock())
                case RefreshAction.PROBE:
                    tick.measured(await prober(list(step.addrs)))
                case RefreshAction.SET_BEACON:
                    manager.set_beacon_addr_udp(await resolve_beacon(step.beacon))
                    tick.succeeded()
                case RefreshAction.REGISTER:
                    manager.register_with_beacon()
                    tick.succeeded()
                case _:  # SAVE_CACHE (DONE ends the loop)
                    now = wall_clock()
                    await asyncio.to_thread(save_beacon_cache, identity_path, step.addrs, now=now)
                    tick.succeeded()
        except step.failures as exc:
            tick.failed(exc)
    return tick.outcome
