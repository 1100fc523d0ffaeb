"""Fakes for the routing core's collaborators: clock, socket, counters, registry, resolver.

Real objects with recorded behaviour, never Mock-built collaborators. ``FakeNet``
wires several Managers and an in-memory beacon together, with knobs to drop,
duplicate and reorder datagrams (aioquic / trio style).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from natroute.routing import Addr, Manager, ResolveError
from natroute.routing.addr import addr_equal
from natroute.routing.wire import Relay, RelayDeliver, decode_message, encode_message

__all__ = [
    "Counters",
    "FakeClock",
    "FakeLister",
    "FakeNet",
    "FakeNode",
    "RecordingSender",
    "ResolverTable",
]


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


class RecordingSender:
    """A ``SocketSender`` that records ``(data, addr)`` and can be told to raise."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Addr]] = []
        self.error: OSError | None = None
        self.attempts = 0

    def fail_with(self, error: OSError | None) -> None:
        """Raise ``error`` from every following ``sendto`` (None: succeed again)."""
        self.error = error

    def sendto(self, data: bytes, addr: Addr, /) -> int:
        self.attempts += 1
        if self.error is not None:
            raise self.error
        self.sent.append((bytes(data), addr))
        return len(data)


@dataclass
class Counters:
    """The caller's packet and byte counters (a ``CounterTarget``)."""

    pkts_sent: int = 0
    bytes_sent: int = 0


class FakeLister:
    """A ``BeaconLister`` (registry client) answering a set response or raising."""

    def __init__(self, response: Any = None, error: Exception | None = None) -> None:
        self.response = response
        self.error = error
        self.calls: list[dict[str, Any]] = []

    @classmethod
    def of(cls, *addrs: str) -> FakeLister:
        """A registry listing ``addrs`` as ``{"addr": ...}`` entries."""
        return cls({"type": "beacon_list_ok", "beacons": [{"addr": a} for a in addrs]})

    def set_addrs(self, *addrs: str) -> None:
        """Change the listed beacons (and stop failing)."""
        self.error = None
        self.response = {"beacons": [{"addr": a} for a in addrs]}

    def send(self, msg: dict[str, Any], /) -> dict[str, Any]:
        self.calls.append(msg)
        if self.error is not None:
            raise self.error
        resp: dict[str, Any] = self.response
        return resp


class ResolverTable:
    """A ``Resolver`` for ``Manager(resolver=...)``: a fixed name table, no DNS."""

    def __init__(self, table: dict[str, Addr] | None = None) -> None:
        self.table = dict(table or {})
        self.calls: list[str] = []

    def __call__(self, hostport: str) -> Addr:
        self.calls.append(hostport)
        try:
            return self.table[hostport]
        except KeyError:
            raise ResolveError(f"resolve beacon: no such host {hostport!r}") from None


# -- FakeNet: two (or more) Managers and a beacon, in memory -----------------

Datagram = tuple[Addr, Addr, bytes]  # (source, destination, data)


class _NetSocket:
    """The ``SocketSender`` a node's Manager uses on the FakeNet."""

    def __init__(self, net: FakeNet, local: Addr) -> None:
        self._net = net
        self.local = local

    def sendto(self, data: bytes, addr: Addr, /) -> int:
        self._net.send(self.local, addr, bytes(data))
        return len(data)


@dataclass
class FakeNode:
    """One daemon on the FakeNet: a real Manager plus the caller's receive path (§7.3).

    Tunnel frames are ``PILS | sender id | body``; every node "holds a crypto
    session" for every other (authentication is out of scope here).
    """

    node_id: int
    addr: Addr
    manager: Manager
    clock: FakeClock
    peers: dict[int, Addr] = field(default_factory=dict)
    received: list[tuple[int, bytes, Addr]] = field(default_factory=list)
    cleared: list[int] = field(default_factory=list)

    def send(self, peer: int, body: bytes) -> None:
        """Send one tunnel frame to ``peer`` through ``write_frame``."""
        frame = b"PILS" + self.node_id.to_bytes(4, "big") + body
        self.manager.write_frame(peer, self.peers.get(peer), frame)

    def receive(self, frm: Addr, data: bytes) -> None:
        """The caller's demultiplexer (spec §3.1, §7.3), reduced to what routing needs."""
        if data and data[0] < 0x10:
            if not self.manager.is_from_beacon(frm):
                return
            msg = decode_message(data)
            if isinstance(msg, RelayDeliver):
                admitted, _, _ = self.manager.mark_relay_activated_if_had_crypto(msg.src, True)
                if admitted:
                    self._tunnel_frame(frm, msg.payload)
            return
        self._tunnel_frame(frm, data)

    def _tunnel_frame(self, frm: Addr, frame: bytes) -> None:
        if len(frame) < 8 or frame[:4] != b"PILS":
            return
        sender = int.from_bytes(frame[4:8], "big")
        self.manager.clear_send_err_count(sender)
        if self.manager.clear_relay_on_direct(sender, frm):
            self.cleared.append(sender)
        if not self.manager.is_from_beacon(frm):
            self.manager.record_direct_recv(sender, self.clock())
            self.peers[sender] = frm
        self.received.append((sender, frame[8:], frm))


class FakeNet:
    """In-memory UDP between FakeNodes and one relaying beacon.

    ``drop`` decides per datagram whether it is lost; ``duplicate`` sends
    every datagram twice; ``reorder`` shuffles each delivery batch with a
    seeded RNG. Delivery happens only in :meth:`deliver`, so tests decide
    exactly when packets arrive.
    """

    def __init__(self, beacon: Addr, clock: FakeClock, *, seed: int = 0) -> None:
        self.beacon = beacon
        self.clock = clock
        self.nodes: dict[int, FakeNode] = {}
        self.queue: list[Datagram] = []
        self.drop: Callable[[Datagram], bool] = lambda d: False
        self.duplicate = False
        self.reorder = False
        self.rng = random.Random(seed)
        self.beacon_seen: list[Datagram] = []

    def add_node(self, node_id: int, addr: Addr) -> FakeNode:
        """A node whose Manager uses the beacon and this net's socket."""
        manager = Manager(self.clock)
        manager.set_socket(_NetSocket(self, addr))
        manager.set_local_node_id_fn(lambda: node_id)
        manager.set_beacon_addr_udp(self.beacon)
        node = FakeNode(node_id, addr, manager, self.clock)
        self.nodes[node_id] = node
        return node

    def send(self, src: Addr, dst: Addr, data: bytes) -> None:
        """Queue one datagram (twice when duplicating)."""
        self.queue.append((src, dst, data))
        if self.duplicate:
            self.queue.append((src, dst, data))

    def deliver(self) -> int:
        """Deliver everything queued so far (and what the beacon forwards)."""
        delivered = 0
        while self.queue:
            batch, self.queue = self.queue, []
            if self.reorder:
                self.rng.shuffle(batch)
            for datagram in batch:
                if self.drop(datagram):
                    continue
                delivered += 1
                src, dst, data = datagram
                if addr_equal(dst, self.beacon):
                    self._beacon_receive(src, data)
                    continue
                for node in self.nodes.values():
                    if addr_equal(node.addr, dst):
                        node.receive(src, data)
        return delivered

    def _beacon_receive(self, src: Addr, data: bytes) -> None:
        self.beacon_seen.append((src, self.beacon, data))
        if not data or data[0] >= 0x10:
            return  # a raw tunnel frame sent to the beacon is dropped (spec §6.12)
        msg = decode_message(data)
        if isinstance(msg, Relay) and msg.dst in self.nodes:
            out = encode_message(RelayDeliver(msg.src, msg.payload))
            self.send(self.beacon, self.nodes[msg.dst].addr, out)
