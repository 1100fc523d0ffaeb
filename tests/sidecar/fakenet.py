"""An in-memory internet with RFC 4787 NATs, for the sidecar's sans-I/O engine.

Hosts run a real :class:`~natroute.sidecar.engine.Engine` driving a real
routing ``Manager`` on one shared :class:`FakeClock`; two real sans-I/O
:class:`~natroute.beacon.core.BeaconCore` beacons sit on the internet.
Datagrams move through a queue that :meth:`FakeNet.run` drains synchronously.

Between a host and the internet sit zero or more :class:`Router` s (two for
carrier-grade NAT). Each router has a mapping behaviour (endpoint-independent,
address-dependent or address-and-port-dependent), a filtering behaviour
(same three) and hairpinning on or off, as RFC 4787 defines them;
:data:`PRESETS` names the usual combinations. Several hosts may share one
router's LAN. A datagram climbs from its host through the routers (each
translating the source) until the destination is inside the current
network, then descends through the routers on the destination's side (each
filtering and translating back). A mapping that depends on the destination
takes a random free port (1024-65535) from the router's own seeded RNG, as
the lab's symmetric preset does (``masquerade fully-random``). A host owns
its peer socket (index 0) and the spray sockets its engine asks for
(port prediction), each with its own port. Unroutable destinations and closed ports
answer like the kernel would (an ICMP error reported to the sender's engine
through ``send_failed``); filtered datagrams vanish silently, as on the lab's
routers.

Addresses are from documentation and private ranges; nothing here touches a
real socket.
"""

from __future__ import annotations

import errno
import os
import random
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from natroute.beacon.auth import sign_discover
from natroute.beacon.config import BeaconConfig, RateLimit
from natroute.beacon.core import BeaconCore
from natroute.routing.config import ManagerConfig
from natroute.routing.manager import Manager
from natroute.routing.types import Addr
from natroute.sidecar.candidates import Candidate, CandidateKind, SelfAddrs
from natroute.sidecar.engine import Engine
from natroute.sidecar.model import NatType, NodeConfig, PeerInfo, PredictConfig
from natroute.sidecar.observer import Observer
from tests.routing.fakes import FakeClock

__all__ = [
    "BEACON_A",
    "BEACON_B",
    "PRESETS",
    "Datagram",
    "FakeClock",
    "FakeNet",
    "Filtering",
    "Host",
    "Mapping",
    "NatSpec",
    "Router",
    "public_key",
]

BEACON_A: Addr = ("203.0.113.1", 7000)
BEACON_B: Addr = ("203.0.113.2", 7000)
_WALL = 1_800_000_000.0
_NO_LIMIT = RateLimit(0.0, 0.0)


def public_key(key: X25519PrivateKey) -> bytes:
    """Raw X25519 public key bytes."""
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


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

    def __init__(self, net: FakeNet, name: str, spec: NatSpec, wan_ip: str, lan_prefix: str):
        self.net = net
        self.name = name
        self.spec = spec
        self.wan_ip = wan_ip
        self.lan_prefix = lan_prefix
        self.wan_network: str = ""  # set by FakeNet
        self._next_port = 40000
        self._rng = random.Random(f"{net.seed}-{name}")
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


@dataclass(eq=False)
class Host:
    """One node: its engine and what the test reads back."""

    name: str
    node_id: int
    inside: Addr
    network: str
    engine: Engine
    manager: Manager
    x25519: X25519PrivateKey
    ed25519: Ed25519PrivateKey
    delivered: list[tuple[int, bytes]] = field(default_factory=list)
    lookups: list[int] = field(default_factory=list)
    open: bool = True  # False: the socket is closed (port unreachable)
    sockets: dict[int, Addr] = field(default_factory=dict)  # spray socket index -> address
    socket_limit: int = 1024  # spray sockets the host can open at once (then EMFILE)
    most_sockets: int = 0  # the most spray sockets open at once
    sent_from: Counter[int] = field(default_factory=Counter)  # datagrams per local socket
    next_port: int = 50000

    def socket_of(self, port: int) -> int | None:
        """The local socket index bound to ``port`` (0: the peer socket), or None."""
        if port == self.inside[1]:
            return 0 if self.open else None
        return next((i for i, a in self.sockets.items() if a[1] == port), None)

    @property
    def x25519_public(self) -> bytes:
        """Raw X25519 public key, as the registry publishes it."""
        return public_key(self.x25519)

    def peer(self, other: Host) -> object:
        """Our engine's record of ``other`` (asserted to exist)."""
        peer = self.engine.peers.get(other.node_id)
        assert peer is not None, f"{self.name} does not know {other.name}"
        return peer


class FakeNet:
    """The internet, routers, hosts and two beacons on one fake clock."""

    def __init__(
        self,
        *,
        seed: int = 0,
        node_config: NodeConfig | None = None,
        manager_config: ManagerConfig | None = None,
        predict: PredictConfig | None = None,
    ) -> None:
        self.clock = FakeClock()
        self.predict = predict
        self.node_config = node_config or NodeConfig(keepalive_interval=5.0)
        self.manager_config = manager_config or ManagerConfig()
        beacon_config = BeaconConfig(beacon_id=1, discover_limit=_NO_LIMIT, punch_limit=_NO_LIMIT)
        self.beacons: dict[Addr, BeaconCore] = {
            BEACON_A: BeaconCore(beacon_config, wall_clock=lambda: _WALL),
            BEACON_B: BeaconCore(
                BeaconConfig(beacon_id=2, discover_limit=_NO_LIMIT, punch_limit=_NO_LIMIT),
                wall_clock=lambda: _WALL,
            ),
        }
        self.registry: dict[int, PeerInfo] = {}
        self.hosts: dict[str, Host] = {}
        self.routers: dict[str, Router] = {}
        self.auto_answer = True
        self.loss = 0.0
        self.delivered: list[Datagram] = []
        self.dropped: list[Datagram] = []
        self.seed = seed
        self._rng = random.Random(seed)
        self._networks: dict[str, dict[str, Host | Router]] = {"internet": {}}
        self._lan_of: dict[str, Router] = {}  # network name -> the router owning it
        self._queue: deque[tuple[bytes, Addr, Addr, Host | None]] = deque()
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
        router = Router(self, name, base, wan_ip, f"10.{index}.0.")
        if behind is not None:
            router.lan_prefix = f"192.168.{index}."
        router.wan_network = network
        self.routers[name] = router
        self._networks[network][wan_ip] = router
        self._networks[f"lan-{name}"] = {}
        self._lan_of[f"lan-{name}"] = router
        return router

    def host(
        self,
        name: str,
        *,
        behind: str | None = None,
        port: int = 4000,
        node_config: NodeConfig | None = None,
        relay_only: bool | None = None,
        check_nat: bool = True,
        predict: PredictConfig | None = None,
    ) -> Host:
        """A node (public, or behind ``behind``), NAT-checked, registered, published."""
        self._count += 1
        n = self._count
        if behind is None:
            network, ip = "internet", f"198.51.100.{n}"
        else:
            network = f"lan-{behind}"
            ip = f"{self.routers[behind].lan_prefix}{10 + n}"
        inside = (ip, port)
        cfg = node_config or self.node_config
        manager = Manager(clock=self.clock, config=self.manager_config)
        manager.set_beacon_addr_udp(BEACON_A)
        engine = Engine(
            manager,
            cfg,
            rng=random.Random(n),
            self_addrs=SelfAddrs([inside]),
            observer=Observer(local=inside),
            predict=predict or self.predict,
        )
        engine.beacons = {"beacon-a": BEACON_A, "beacon-b": BEACON_B}
        host = Host(
            name,
            0x1000 + n,
            inside,
            network,
            engine,
            manager,
            X25519PrivateKey.from_private_bytes(bytes([n]) * 32),
            Ed25519PrivateKey.from_private_bytes(bytes([n + 100]) * 32),
        )
        self.hosts[name] = host
        self._networks[network][ip] = host
        engine.set_identity(host.node_id, host.x25519, epoch=1)
        if check_nat:
            self.check_nat(host)
        self.keepalive(host)
        self.publish(host, relay_only=relay_only)
        return host

    def check_nat(self, host: Host) -> NatType:
        """Run a NAT check through both beacons; returns (and applies) the verdict."""
        engine = host.engine
        engine.check_nat([("beacon-a", BEACON_A), ("beacon-b", BEACON_B)], self.clock())
        self.flush(host)
        self.run()
        verdict = engine.observer.verdict
        nat_type = verdict.nat_type if verdict is not None else NatType.UNKNOWN
        engine.set_nat_type(nat_type)
        engine.set_local_candidates(self.candidates(host))
        return nat_type

    def candidates(self, host: Host) -> list[Candidate]:
        """What the host offers: its own address, then what the beacon saw."""
        out = [Candidate(host.inside, CandidateKind.HOST)]
        seen = host.engine.observer.endpoint
        if seen is not None and seen != host.inside:
            out.append(Candidate(seen, CandidateKind.SRFLX))
        return out

    def keepalive(self, host: Host) -> None:
        """A signed discover to beacon A: registers the node there."""
        extra = sign_discover(host.ed25519, host.node_id, int(_WALL))
        host.engine.send_discover("beacon-a", BEACON_A, self.clock(), extra)
        self.flush(host)
        self.run()

    def publish(self, host: Host, *, relay_only: bool | None = None) -> None:
        """(Re)write the host's registry entry from its current candidates."""
        nat = host.engine.nat_type
        flag = nat is NatType.ENDPOINT_DEPENDENT if relay_only is None else relay_only
        cands = tuple(host.engine.local_candidates)
        self.registry[host.node_id] = PeerInfo(
            host.node_id, host.x25519_public, relay_only=flag, candidates=cands, name=host.name
        )

    # -- the shell's job --------------------------------------------------------

    def flush(self, host: Host) -> None:
        """Move a host's outputs: datagrams to the network, payloads, look-ups."""
        engine = host.engine
        now = self.clock()
        self._sockets(host)
        for data, dst in engine.datagrams_to_send():
            host.sent_from[0] += 1
            self.send(host, data, dst)
        for index, data, dst in engine.extra_datagrams_to_send():
            src = host.sockets.get(index)
            if src is not None:
                host.sent_from[index] += 1
                self.send(host, data, dst, src=src)
        host.delivered.extend(engine.deliveries())
        for node_id in engine.lookups_to_start(now):
            host.lookups.append(node_id)
            if self.auto_answer:
                self.answer(host, node_id)

    def _sockets(self, host: Host) -> None:
        """Open and close the spray sockets the engine asks for (the shell's job)."""
        engine = host.engine
        for index in engine.sockets_to_close():
            host.sockets.pop(index, None)
        wanted = engine.sockets_to_open()
        if not wanted:
            return
        opened = []
        for index in wanted:
            if len(host.sockets) >= host.socket_limit:
                continue
            host.sockets[index] = (host.inside[0], host.next_port)
            host.next_port += 1
            opened.append(index)
        host.most_sockets = max(host.most_sockets, len(host.sockets))
        engine.sockets_opened(opened, self.clock())

    def answer(self, host: Host, node_id: int) -> None:
        """Answer one look-up of ``host`` from the registry table."""
        info = self.registry.get(node_id)
        if info is None:
            host.engine.resolve_failed(node_id, unknown=True, now=self.clock())
        else:
            host.engine.resolved(info, self.clock())
        self.flush(host)

    def app_send(self, src: Host, dst: Host, payload: bytes) -> None:
        """The application of ``src`` sends ``payload`` to ``dst``."""
        src.engine.app_send(dst.node_id, payload, self.clock())
        self.flush(src)
        self.run()

    # -- moving datagrams -------------------------------------------------------

    def send(self, host: Host | None, data: bytes, dst: Addr, src: Addr | None = None) -> None:
        """Queue a datagram from ``host`` (or from a beacon / a forged ``src``)."""
        self._queue.append((data, src or (host.inside if host else BEACON_A), dst, host))

    def inject(self, data: bytes, src: Addr, dst: Addr) -> None:
        """Queue a datagram with a forged source, already on the internet."""
        self._queue.append((data, src, dst, None))

    def block(self, a: Host, b: Host, *, one_way: bool = False) -> None:
        """Drop every datagram between two hosts (only ``a`` → ``b`` with ``one_way``)."""
        self._blocked.add((a.name, b.name))
        if not one_way:
            self._blocked.add((b.name, a.name))

    def unblock(self) -> None:
        """Heal every block."""
        self._blocked.clear()

    def _icmp(self, host: Host | None, dst: Addr, code: int, src: Addr) -> None:
        if host is not None:
            local = host.socket_of(src[1]) or 0
            host.engine.send_failed(dst, OSError(code, os.strerror(code)), self.clock(), local)
            self.flush(host)

    def step(self) -> Datagram:
        """Deliver (or drop) the next queued datagram and return it."""
        data, src, dst, sender = self._queue.popleft()
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
                self._icmp(sender, sent_to, errno.EHOSTUNREACH, src)
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
        target: Host | Router | None = None
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
        local = target.socket_of(dst[1]) if isinstance(target, Host) else None
        if not isinstance(target, Host) or local is None:
            self._icmp(sender, sent_to, errno.ECONNREFUSED, src)
            return self._drop(Datagram(data, cur_src, dst, "port_unreachable"))
        if sender is not None and (sender.name, target.name) in self._blocked:
            return self._drop(Datagram(data, cur_src, dst, "blocked"))
        datagram = Datagram(data, cur_src, dst)
        self.delivered.append(datagram)
        target.engine.datagram_received(data, cur_src, self.clock(), local)
        self.flush(target)
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

    def tick(self) -> None:
        """Every host's upkeep once, then delivery."""
        now = self.clock()
        for host in self.hosts.values():
            host.engine.tick(now)
            self.flush(host)
        self.run()

    def advance(
        self, seconds: float, step: float = 0.25, each: Callable[[], object] | None = None
    ) -> None:
        """Move time in ``step``s; after each: ``each()``, every host's tick, delivery.

        Hosts re-register with beacon A every 10 s (the sidecar's keepalive).
        """
        end = self.clock.now + seconds
        last_keepalive = self.clock.now
        while self.clock.now + step <= end + 1e-9:
            self.clock.advance(step)
            if self.clock.now - last_keepalive >= 10.0:
                last_keepalive = self.clock.now
                for host in self.hosts.values():
                    self.keepalive(host)
            if each is not None:
                each()
            self.tick()
