"""An in-memory network for the sidecar's sans-I/O peer logic.

Nodes (a real :class:`~natroute.sidecar.node.Node` driving a real routing
``Manager`` on a shared :class:`FakeClock`) and a real sans-I/O
:class:`~natroute.beacon.core.BeaconCore` exchange datagrams through a queue
that :meth:`FakeNet.run` drains synchronously. Between a node and the rest
sits a NAT model:

* ``NONE``: the node's address is public;
* ``CONE``: endpoint-independent mapping (one public port per inside socket);
* ``SYMMETRIC``: a new public port per destination.

Both NATs filter port-restricted: inbound datagrams pass only from addresses
the inside socket has sent to. :meth:`FakeNet.blackhole` drops the direct
path between two nodes while the beacon stays reachable; ``loss`` drops
datagrams at random (seeded). Registry answers come from
:attr:`FakeNet.registry`, synchronously or when a test says so.

Addresses are from the documentation ranges (RFC 5737); nothing here
touches a real socket.
"""

from __future__ import annotations

import errno
import os
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from natroute.beacon.config import BeaconConfig, RateLimit
from natroute.beacon.core import BeaconCore
from natroute.routing.config import ManagerConfig
from natroute.routing.manager import Manager
from natroute.routing.types import Addr
from natroute.sidecar.node import NatType, Node, NodeConfig, PeerInfo
from tests.routing.fakes import FakeClock

__all__ = [
    "BEACON_ADDR",
    "Datagram",
    "FakeClock",
    "FakeIO",
    "FakeNet",
    "FakeNode",
    "FakeSocket",
    "Nat",
    "NatKind",
    "public_key",
]

BEACON_ADDR: Addr = ("203.0.113.1", 7000)
_NODE_PORT = 4000
_NO_LIMIT = RateLimit(0.0, 0.0)


def public_key(key: X25519PrivateKey) -> bytes:
    """Raw X25519 public key bytes."""
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


class NatKind(Enum):
    """The NAT in front of a node."""

    NONE = "none"
    CONE = "cone"
    SYMMETRIC = "symmetric"


class Nat:
    """Mapping (cone or symmetric) and port-restricted filtering of one NAT."""

    def __init__(self, kind: NatKind, public_ip: str) -> None:
        self.kind = kind
        self.public_ip = public_ip
        self._next_port = 40000
        self._out: dict[tuple[Addr, Addr | None], int] = {}
        self._in: dict[int, Addr] = {}
        self._allowed: set[tuple[int, Addr]] = set()

    def outbound(self, inside: Addr, dst: Addr) -> Addr:
        """The public source of a datagram from ``inside`` to ``dst``; opens the filter."""
        key = (inside, dst if self.kind is NatKind.SYMMETRIC else None)
        port = self._out.get(key)
        if port is None:
            port = self._out[key] = self._next_port
            self._next_port += 1
            self._in[port] = inside
        self._allowed.add((port, dst))
        return self.public_ip, port

    def inbound(self, port: int, src: Addr) -> Addr | None:
        """The inside address a datagram from ``src`` to ``port`` goes to, or None (filtered)."""
        if (port, src) not in self._allowed:
            return None
        return self._in.get(port)


@dataclass(frozen=True, slots=True)
class Datagram:
    """One datagram that reached its destination (or was dropped, with ``dropped``)."""

    data: bytes
    src: Addr
    dst: Addr
    dropped: str = ""


class FakeSocket:
    """A node's socket (a ``SocketSender``): hands datagrams to the network.

    ``fail`` maps destinations to an errno raised (as ``OSError``) on send.
    """

    def __init__(self, net: FakeNet, inside: Addr) -> None:
        self.net = net
        self.inside = inside
        self.sent: list[tuple[bytes, Addr]] = []
        self.fail: dict[Addr, int] = {}

    def sendto(self, data: bytes, addr: Addr, /) -> int:
        code = self.fail.get(addr)
        if code is not None:
            raise OSError(code, os.strerror(code))
        self.sent.append((data, addr))
        self.net.send(self.inside, data, addr)
        return len(data)


class FakeIO:
    """The node's shell: records deliveries, answers resolves from the registry table."""

    def __init__(self, net: FakeNet) -> None:
        self.net = net
        self.node: Node | None = None
        self.auto_resolve = True
        self.delivered: list[tuple[int, bytes]] = []
        self.resolves: list[int] = []
        self.waiting: list[int] = []
        self.observed: list[Addr] = []

    def deliver(self, src: int, payload: bytes) -> None:
        self.delivered.append((src, payload))

    def resolve(self, node_id: int) -> None:
        self.resolves.append(node_id)
        if self.auto_resolve:
            self.answer(node_id)
        else:
            self.waiting.append(node_id)

    def answer(self, node_id: int) -> None:
        """Answer one resolve from the registry table (unknown → failed)."""
        assert self.node is not None
        info = self.net.registry.get(node_id)
        if info is None:
            self.node.on_resolve_failed(node_id)
        else:
            self.node.on_resolved(info)

    def answer_all(self) -> None:
        """Answer every resolve that waits, in order."""
        waiting, self.waiting = self.waiting, []
        for node_id in waiting:
            self.answer(node_id)

    def endpoint_observed(self, addr: Addr) -> None:
        self.observed.append(addr)


@dataclass(eq=False)
class FakeNode:
    """One node of the fake network and its collaborators."""

    node_id: int
    key: X25519PrivateKey
    epoch: int
    manager: Manager
    node: Node
    io: FakeIO
    sock: FakeSocket
    inside: Addr
    nat: Nat | None
    endpoint: Addr | None = None

    @property
    def public_key(self) -> bytes:
        """Our X25519 public key as published in the registry."""
        return public_key(self.key)


class FakeNet:
    """Nodes, a beacon and NATs on one fake clock; :meth:`run` delivers."""

    def __init__(
        self,
        *,
        seed: int = 0,
        manager_config: ManagerConfig | None = None,
        node_config: NodeConfig | None = None,
        beacon_config: BeaconConfig | None = None,
    ) -> None:
        self.clock = FakeClock()
        self.manager_config = manager_config or ManagerConfig()
        self.node_config = node_config or NodeConfig()
        self.beacon = BeaconCore(
            beacon_config
            or BeaconConfig(beacon_id=1, discover_limit=_NO_LIMIT, punch_limit=_NO_LIMIT),
            wall_clock=lambda: 1_800_000_000.0,
        )
        self.registry: dict[int, PeerInfo] = {}
        self.nodes: dict[int, FakeNode] = {}
        self.loss = 0.0
        self.delivered: list[Datagram] = []
        self.dropped: list[Datagram] = []
        self._rng = random.Random(seed)
        self._hosts: dict[Addr, FakeNode] = {}
        self._nats: dict[str, Nat] = {}
        self._queue: deque[tuple[bytes, Addr, Addr, int | None]] = deque()
        self._blackholes: set[tuple[int, int] | frozenset[int]] = set()
        self._count = 0
        self.register_interval = 60.0
        self._registered_at = self.clock.now

    # -- building ------------------------------------------------------------

    def add_node(
        self,
        nat: NatKind = NatKind.NONE,
        *,
        relay_only: bool = False,
        nat_type: NatType | None = None,
        register: bool = True,
        node_id: int | None = None,
        epoch: int = 1,
        node_config: NodeConfig | None = None,
        manager_config: ManagerConfig | None = None,
    ) -> FakeNode:
        """A new node behind ``nat``, registered with the beacon and the registry.

        ``relay_only`` is what the registry publishes (and what the node set
        for itself); ``nat_type`` is passed to ``Node.set_nat_type``.
        """
        self._count += 1
        n = self._count
        nid = node_id if node_id is not None else 0x1000 + n
        key = X25519PrivateKey.from_private_bytes(bytes([n]) * 32)
        translator: Nat | None = None
        if nat is NatKind.NONE:
            inside: Addr = (f"198.51.100.{n}", _NODE_PORT)
        else:
            inside = (f"192.0.2.{n}", _NODE_PORT)
            translator = Nat(nat, f"198.51.100.{100 + n}")
            self._nats[translator.public_ip] = translator
        manager = Manager(clock=self.clock, config=manager_config or self.manager_config)
        manager.set_beacon_addr_udp(BEACON_ADDR)
        io = FakeIO(self)
        node = Node(
            manager,
            io,
            nid,
            key,
            epoch,
            node_config or self.node_config,
            clock=self.clock,
            rng=random.Random(n),
        )
        io.node = node
        sock = FakeSocket(self, inside)
        node.set_socket(sock)
        if nat_type is not None or relay_only:
            node.set_nat_type(nat_type or NatType.UNKNOWN, relay_only)
        fake = FakeNode(nid, key, epoch, manager, node, io, sock, inside, translator)
        self.nodes[nid] = fake
        self._hosts[inside] = fake
        if register:
            manager.register_with_beacon()
            self.run()
            fake.endpoint = io.observed[-1]
            self.publish(fake, relay_only=relay_only)
        return fake

    def publish(self, fake: FakeNode, *, relay_only: bool = False) -> None:
        """(Re)write the node's registry entry (relay_only entries carry no endpoint)."""
        endpoint = None if relay_only else fake.endpoint
        self.registry[fake.node_id] = PeerInfo(fake.node_id, endpoint, relay_only, fake.public_key)

    def blackhole(
        self, a: FakeNode, b: FakeNode, on: bool = True, *, one_way: bool = False
    ) -> None:
        """Drop (or stop dropping) every datagram between ``a`` and ``b``.

        With ``one_way`` only datagrams from ``a`` to ``b`` are dropped.
        """
        pair: tuple[int, int] | frozenset[int] = (
            (a.node_id, b.node_id) if one_way else frozenset({a.node_id, b.node_id})
        )
        if on:
            self._blackholes.add(pair)
        else:
            self._blackholes.discard(pair)

    # -- moving datagrams ----------------------------------------------------

    def send(self, inside: Addr, data: bytes, dst: Addr) -> None:
        """Queue a datagram sent from the inside address ``inside`` (or the beacon)."""
        sender = self._hosts.get(inside)
        src = inside
        if sender is not None and sender.nat is not None:
            src = sender.nat.outbound(inside, dst)
        self._queue.append((data, src, dst, None if sender is None else sender.node_id))

    def inject(self, data: bytes, src: Addr, dst: Addr) -> None:
        """Queue a datagram with an arbitrary (spoofed) source address."""
        self._queue.append((data, src, dst, None))

    def _target(self, src: Addr, dst: Addr) -> FakeNode | None:
        nat = self._nats.get(dst[0])
        if nat is not None:
            inside = nat.inbound(dst[1], src)
            return None if inside is None else self._hosts.get(inside)
        return self._hosts.get(dst)

    @property
    def queued(self) -> int:
        """Datagrams waiting for delivery."""
        return len(self._queue)

    def step(self) -> Datagram:
        """Deliver (or drop) the next queued datagram and return it."""
        data, src, dst, sender = self._queue.popleft()
        if self.loss and self._rng.random() < self.loss:
            return self._drop(Datagram(data, src, dst, "loss"))
        if dst == BEACON_ADDR:
            self.delivered.append(Datagram(data, src, dst))
            for out, to in self.beacon.handle_datagram(data, src, self.clock()):
                self.send(BEACON_ADDR, out, to)
            return self.delivered[-1]
        target = self._target(src, dst)
        if target is None:
            return self._drop(Datagram(data, src, dst, "filtered"))
        if sender is not None and (
            frozenset({sender, target.node_id}) in self._blackholes
            or (sender, target.node_id) in self._blackholes
        ):
            return self._drop(Datagram(data, src, dst, "blackhole"))
        datagram = Datagram(data, src, dst)
        self.delivered.append(datagram)
        target.node.datagram_received(data, src)
        return datagram

    def _drop(self, datagram: Datagram) -> Datagram:
        self.dropped.append(datagram)
        return datagram

    def run(self, max_datagrams: int = 100_000) -> int:
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
        """Run every node's upkeep once, then deliver."""
        for node_id in sorted(self.nodes):
            self.nodes[node_id].node.tick()
        self.run()

    def advance(
        self,
        seconds: float,
        step: float = 1.0,
        each: Callable[[], object] | None = None,
    ) -> None:
        """Move time in ``step``s; after each: ``each()``, every node's tick, delivery.

        Nodes re-register with the beacon every :attr:`register_interval`
        seconds (the sidecar's keepalive), so long runs outlive its node TTL.
        """
        end = self.clock.now + seconds
        while self.clock.now + step <= end + 1e-9:
            self.clock.advance(step)
            if self.clock.now - self._registered_at >= self.register_interval:
                self._registered_at = self.clock.now
                for node_id in sorted(self.nodes):
                    self.nodes[node_id].manager.register_with_beacon()
            if each is not None:
                each()
            self.tick()

    def icmp_refused(self) -> OSError:
        """An ICMP port-unreachable error as the kernel reports it."""
        return OSError(errno.ECONNREFUSED, os.strerror(errno.ECONNREFUSED))
