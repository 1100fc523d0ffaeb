"""The one in-memory network of the tests: an internet with RFC 4787 NATs and two real beacons.

Endpoints are anything with an address that takes datagrams: the sidecar's
engine hosts (``tests/sidecar/fakenet.py``) and the routing core's Manager
nodes (``tests/routing/fakes.py``) both live here. Two real sans-I/O
:class:`~natroute.beacon.core.BeaconCore` beacons sit on the internet, and
everything runs on one :class:`FakeClock`. Datagrams move through a queue
that :meth:`Internet.run` drains synchronously, so tests decide exactly when
packets arrive.

Between an endpoint and the internet sit zero or more :class:`Router` s (two
for carrier-grade NAT). Each router has a mapping behaviour (endpoint-
independent, address-dependent or address-and-port-dependent), a filtering
behaviour (same three) and hairpinning on or off, as RFC 4787 defines them;
:data:`PRESETS` names the usual combinations. Several endpoints may share
one router's LAN. A datagram climbs from its sender through the routers
(each translating the source) until the destination is inside the current
network, then descends through the routers on the destination's side (each
filtering and translating back). A mapping that depends on the destination
takes a random free port (1024-65535) from the router's own seeded RNG, as
the lab's symmetric preset does (``masquerade fully-random``). An endpoint
may own several sockets (:meth:`Internet.local_socket` says which one a port
reaches). Unroutable destinations and closed ports answer like the kernel
would (an ICMP error reported to the sender's ``send_failed``); filtered
datagrams vanish silently, as on the lab's routers.

Impairments: ``loss`` (a random share of datagrams is lost), ``drop`` (a
predicate: the datagrams it names are lost), ``duplicate`` (every datagram is
sent twice), ``reorder`` (the next datagram is drawn at random from the
queue), ``block`` (nothing between two endpoints). The random ones use a
seeded RNG.

Addresses are from documentation and private ranges; nothing here touches a
real socket.
"""

from __future__ import annotations

import errno
import os
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Generic, Protocol, TypeVar

from natroute.beacon.config import BeaconConfig, RateLimit
from natroute.beacon.core import BeaconCore
from natroute.routing.types import Addr

__all__ = [
    "BEACON_A",
    "BEACON_B",
    "PRESETS",
    "WALL",
    "Datagram",
    "Endpoint",
    "FakeClock",
    "Filtering",
    "Internet",
    "Mapping",
    "NatSpec",
    "Router",
]

BEACON_A: Addr = ("203.0.113.1", 7000)
BEACON_B: Addr = ("203.0.113.2", 7000)
#: The beacons' wall clock (Unix seconds), for signed discovers.
WALL = 1_800_000_000.0
_NO_LIMIT = RateLimit(0.0, 0.0)


class FakeClock:
    """A monotonic clock the test moves by hand (never sleeps)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, dt: float) -> float:
        """Move time forward by ``dt`` seconds; returns the new time."""
        self.now += dt
        return self.now


class Mapping(Enum):
    """RFC 4787 mapping behaviour: what a new public port depends on."""

    ENDPOINT_INDEPENDENT = "eim"
    ADDRESS_DEPENDENT = "adm"
    ADDRESS_PORT_DEPENDENT = "apdm"


class Filtering(Enum):
    """RFC 4787 filtering behaviour: which outside sources may send in."""

    ENDPOINT_INDEPENDENT = "eif"
    ADDRESS_DEPENDENT = "adf"
    ADDRESS_PORT_DEPENDENT = "apdf"


@dataclass(frozen=True, slots=True)
class NatSpec:
    """One NAT's behaviour."""

    mapping: Mapping
    filtering: Filtering
    hairpin: bool = False


PRESETS: dict[str, NatSpec] = {
    "full-cone": NatSpec(Mapping.ENDPOINT_INDEPENDENT, Filtering.ENDPOINT_INDEPENDENT),
    "address-restricted": NatSpec(Mapping.ENDPOINT_INDEPENDENT, Filtering.ADDRESS_DEPENDENT),
    "port-restricted": NatSpec(Mapping.ENDPOINT_INDEPENDENT, Filtering.ADDRESS_PORT_DEPENDENT),
    "symmetric": NatSpec(Mapping.ADDRESS_PORT_DEPENDENT, Filtering.ADDRESS_PORT_DEPENDENT),
}


class Router:
    """A NAT between its LAN and the network it sits in (its WAN)."""

    def __init__(
        self, name: str, spec: NatSpec, wan_ip: str, lan_prefix: str, seed: object = 0
    ) -> None:
        self.name = name
        self.spec = spec
        self.wan_ip = wan_ip
        self.lan_prefix = lan_prefix
        self.wan_network: str = ""  # set by the Internet
        self._next_port = 40000
        self._rng = random.Random(f"{seed}-{name}")
        self._map: dict[tuple[Addr, object], int] = {}
        self._inside: dict[int, Addr] = {}
        self._permits: set[tuple[int, object]] = set()

    def _map_key(self, dst: Addr) -> object:
        m = self.spec.mapping
        if m is Mapping.ENDPOINT_INDEPENDENT:
            return None
        return dst[0] if m is Mapping.ADDRESS_DEPENDENT else dst

    def _filter_key(self, src: Addr) -> object:
        f = self.spec.filtering
        if f is Filtering.ENDPOINT_INDEPENDENT:
            return None
        return src[0] if f is Filtering.ADDRESS_DEPENDENT else src

    def outbound(self, inside: Addr, dst: Addr) -> Addr:
        """The WAN source of a datagram from ``inside`` to ``dst``; opens the filter."""
        key = (inside, self._map_key(dst))
        port = self._map.get(key)
        if port is None:
            if self.spec.mapping is Mapping.ENDPOINT_INDEPENDENT:
                port = self._next_port
                self._next_port += 1
            else:  # a random free port per destination
                port = self._rng.randint(1024, 65535)
                while port in self._inside:
                    port = self._rng.randint(1024, 65535)
            self._map[key] = port
            self._inside[port] = inside
        self._permits.add((port, self._filter_key(dst)))
        return self.wan_ip, port

    def inbound(self, port: int, src: Addr) -> Addr | None:
        """Where a datagram from ``src`` to our ``port`` goes inside, or None (filtered)."""
        if (port, self._filter_key(src)) not in self._permits:
            return None
        return self._inside.get(port)

    def forget(self) -> None:
        """Drop every mapping (a router reboot)."""
        self._map.clear()
        self._inside.clear()
        self._permits.clear()


@dataclass(frozen=True, slots=True)
class Datagram:
    """One datagram that reached its destination (or was dropped, with ``dropped``)."""

    data: bytes
    src: Addr
    dst: Addr
    dropped: str = ""


class Endpoint(Protocol):
    """What the internet needs of a node: where it is and how to hand it datagrams."""

    @property
    def name(self) -> str: ...

    @property
    def inside(self) -> Addr: ...

    @property
    def network(self) -> str: ...

    @property
    def open(self) -> bool: ...

    def datagram_received(self, data: bytes, src: Addr, now: float) -> None:
        """A datagram arrived from ``src`` (after NAT translation)."""

    def send_failed(self, dst: Addr, err: OSError, now: float) -> None:
        """A datagram to ``dst`` came back as an ICMP error."""


E = TypeVar("E", bound=Endpoint)
_Queued = tuple[bytes, Addr, Addr, E | None]


class Internet(Generic[E]):
    """The internet, its routers, its endpoints and two beacons on one fake clock."""

    def __init__(self, *, seed: int = 0, clock: FakeClock | None = None) -> None:
        self.clock = clock or FakeClock()
        self.beacons: dict[Addr, BeaconCore] = {
            addr: BeaconCore(
                BeaconConfig(beacon_id=n, discover_limit=_NO_LIMIT, punch_limit=_NO_LIMIT),
                wall_clock=lambda: WALL,
            )
            for n, addr in enumerate((BEACON_A, BEACON_B), 1)
        }
        self.routers: dict[str, Router] = {}
        self.loss = 0.0
        self.drop: Callable[[Datagram], bool] = lambda d: False
        self.duplicate = False
        self.reorder = False
        self.delivered: list[Datagram] = []
        self.dropped: list[Datagram] = []
        self.seed = seed
        self._rng = random.Random(seed)
        self._networks: dict[str, dict[str, E | Router]] = {"internet": {}}
        self._lan_of: dict[str, Router] = {}  # network name -> the router owning it
        self._queue: deque[_Queued[E]] = deque()
        self._blocked: set[tuple[str, str]] = set()
        self._count = 0

    # -- building -------------------------------------------------------------

    def router(
        self, name: str, spec: NatSpec | str, *, behind: str | None = None, hairpin: bool = False
    ) -> Router:
        """A NAT router on the internet, or inside another router's LAN (CGN)."""
        base = PRESETS[spec] if isinstance(spec, str) else spec
        if hairpin:
            base = NatSpec(base.mapping, base.filtering, True)
        index = len(self.routers) + 1
        network = "internet" if behind is None else f"lan-{behind}"
        if behind is None:
            wan_ip = f"198.51.100.{100 + index}"
        else:
            parent = self.routers[behind]
            wan_ip = f"{parent.lan_prefix}{100 + index}"
        router = Router(name, base, wan_ip, f"10.{index}.0.", self.seed)
        if behind is not None:
            router.lan_prefix = f"192.168.{index}."
        router.wan_network = network
        self.routers[name] = router
        self._networks[network][wan_ip] = router
        self._networks[f"lan-{name}"] = {}
        self._lan_of[f"lan-{name}"] = router
        return router

    def place(self, behind: str | None = None) -> tuple[int, str, str]:
        """A new endpoint's number, network and IP (public, or on ``behind``'s LAN)."""
        self._count += 1
        n = self._count
        if behind is None:
            return n, "internet", f"198.51.100.{n}"
        return n, f"lan-{behind}", f"{self.routers[behind].lan_prefix}{10 + n}"

    def attach(self, endpoint: E) -> E:
        """Put ``endpoint`` on its network at its address."""
        self._networks[endpoint.network][endpoint.inside[0]] = endpoint
        return endpoint

    # -- moving datagrams -------------------------------------------------------

    def send(self, sender: E | None, data: bytes, dst: Addr, src: Addr | None = None) -> None:
        """Queue a datagram from ``sender`` (or from a beacon / a forged ``src``)."""
        item = (data, src or (sender.inside if sender else BEACON_A), dst, sender)
        self._queue.append(item)
        if self.duplicate:
            self._queue.append(item)

    def inject(self, data: bytes, src: Addr, dst: Addr) -> None:
        """Queue a datagram with a forged source, already on the internet."""
        self.send(None, data, dst, src)

    def block(self, a: E, b: E, *, one_way: bool = False) -> None:
        """Drop every datagram between two endpoints (only ``a`` → ``b`` with ``one_way``)."""
        self._blocked.add((a.name, b.name))
        if not one_way:
            self._blocked.add((b.name, a.name))

    def unblock(self) -> None:
        """Heal every block."""
        self._blocked.clear()

    def local_socket(self, target: E, port: int) -> int | None:
        """Which of ``target``'s sockets ``port`` reaches (0: its one socket), or None."""
        return 0 if target.inside[1] == port and target.open else None

    def received(self, target: E, data: bytes, src: Addr, local: int = 0) -> None:
        """Hand ``target`` a datagram that reached its socket ``local``.

        Subclasses also move what it answers, and tell the socket apart.
        """
        target.datagram_received(data, src, self.clock())

    def icmp(self, sender: E | None, dst: Addr, code: int, src: Addr | None = None) -> None:
        """Report an ICMP error to the sender (from ``src``) of a datagram to ``dst``."""
        if sender is not None:
            sender.send_failed(dst, OSError(code, os.strerror(code)), self.clock())

    def _next(self) -> _Queued[E]:
        queue = self._queue
        if self.reorder and len(queue) > 1:
            pick = self._rng.randrange(len(queue))
            queue.rotate(-pick)
            item = queue.popleft()
            queue.rotate(pick)
            return item
        return queue.popleft()

    def step(self) -> Datagram:
        """Deliver (or drop) the next queued datagram and return it."""
        data, src, dst, sender = self._next()
        if self.drop(Datagram(data, src, dst)):
            return self._drop(Datagram(data, src, dst, "dropped"))
        if self.loss and self._rng.random() < self.loss:
            return self._drop(Datagram(data, src, dst, "loss"))
        network = sender.network if sender is not None else "internet"
        cur_src, sent_to = src, dst
        # climb until the destination lives in the current network
        while dst[0] not in self._networks[network] and not (
            network == "internet" and dst in self.beacons
        ):
            router = self._lan_of.get(network)
            if router is None:
                self.icmp(sender, sent_to, errno.EHOSTUNREACH, src)
                return self._drop(Datagram(data, src, dst, "unroutable"))
            if dst[0] == router.wan_ip:
                if not router.spec.hairpin:
                    return self._drop(Datagram(data, src, dst, "no_hairpin"))
                cur_src = router.outbound(cur_src, dst)
                inside = router.inbound(dst[1], cur_src)
                if inside is None:
                    return self._drop(Datagram(data, src, dst, "filtered"))
                dst = inside
                continue
            cur_src = router.outbound(cur_src, dst)
            network = router.wan_network
        # descend through the routers on the destination's side
        target: E | Router | None = None
        while True:
            target = self._networks[network].get(dst[0])
            if isinstance(target, Router):
                inside = target.inbound(dst[1], cur_src)
                if inside is None:
                    return self._drop(Datagram(data, cur_src, dst, "filtered"))
                dst = inside
                network = f"lan-{target.name}"
                continue
            break
        if dst in self.beacons and network == "internet":
            self.delivered.append(Datagram(data, cur_src, dst))
            for out, to in self.beacons[dst].handle_datagram(data, cur_src, self.clock()):
                self.send(None, out, to, src=dst)
            return self.delivered[-1]
        local = None if target is None else self.local_socket(target, dst[1])
        if target is None or local is None:
            self.icmp(sender, sent_to, errno.ECONNREFUSED, src)
            return self._drop(Datagram(data, cur_src, dst, "port_unreachable"))
        if sender is not None and (sender.name, target.name) in self._blocked:
            return self._drop(Datagram(data, cur_src, dst, "blocked"))
        datagram = Datagram(data, cur_src, dst)
        self.delivered.append(datagram)
        self.received(target, data, cur_src, local)
        return datagram

    def _drop(self, datagram: Datagram) -> Datagram:
        self.dropped.append(datagram)
        return datagram

    def run(self, max_datagrams: int = 200_000) -> int:
        """Deliver queued datagrams (and what they cause) until none are left.

        Raises:
            RuntimeError: more than ``max_datagrams`` (a datagram storm).
        """
        done = 0
        while self._queue:
            done += 1
            if done > max_datagrams:
                raise RuntimeError("datagram storm: the queue never drained")
            self.step()
        return done
