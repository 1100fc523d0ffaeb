"""Fakes for the routing core's collaborators: clock, socket, counters, registry, resolver.

Real objects with recorded behaviour, never Mock-built collaborators. ``FakeNet``
puts several Managers on the tests' one in-memory internet (``tests/internet.py``:
real beacons, NAT routers, knobs to drop, duplicate and reorder datagrams).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from natroute.routing import Addr, Manager, ResolveError
from natroute.routing.wire import RelayDeliver, decode_message
from tests.internet import BEACON_A, Datagram, FakeClock, Internet

__all__ = [
    "BEACON_A",
    "Counters",
    "Datagram",
    "FakeClock",
    "FakeLister",
    "FakeNet",
    "FakeNode",
    "RecordingSender",
    "ResolverTable",
]


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


# -- Managers on the tests' in-memory internet ------------------------------


class _NetSocket:
    """The ``SocketSender`` a node's Manager uses on the internet."""

    def __init__(self, net: FakeNet, node: FakeNode) -> None:
        self._net = net
        self._node = node

    def sendto(self, data: bytes, addr: Addr, /) -> int:
        self._net.send(self._node, bytes(data), addr)
        return len(data)


@dataclass(eq=False)
class FakeNode:
    """One daemon on the internet: a real Manager plus the caller's receive path.

    The receive path is docs/protocol.md, "The caller's paths", reduced to
    what routing needs. Tunnel frames are ``PILS | sender id | body``; every
    node "holds a crypto session" for every other (authentication is out of
    scope here).
    """

    node_id: int
    name: str
    inside: Addr
    manager: Manager
    clock: FakeClock
    network: str = "internet"
    open: bool = True
    peers: dict[int, Addr] = field(default_factory=dict)
    received: list[tuple[int, bytes, Addr]] = field(default_factory=list)
    cleared: list[int] = field(default_factory=list)

    def send(self, peer: int, body: bytes) -> None:
        """Send one tunnel frame to ``peer`` through ``write_frame``."""
        frame = b"PILS" + self.node_id.to_bytes(4, "big") + body
        self.manager.write_frame(peer, self.peers.get(peer), frame)

    def datagram_received(self, data: bytes, src: Addr, now: float) -> None:
        """The caller's demultiplexer: beacon messages, then tunnel frames."""
        if data and data[0] < 0x10:
            if not self.manager.is_from_beacon(src):
                return
            msg = decode_message(data)
            if isinstance(msg, RelayDeliver):
                admission = self.manager.mark_relay_activated_if_had_crypto(msg.src, True)
                if admission.admitted:
                    self._tunnel_frame(src, msg.payload)
            return
        self._tunnel_frame(src, data)

    def send_failed(self, dst: Addr, err: OSError, now: float) -> None:
        """An ICMP error: charged to the peer at ``dst`` (never to the beacon's)."""
        for peer, addr in self.peers.items():
            if addr == dst and not self.manager.is_from_beacon(dst):
                self.manager.handle_send_error(peer, err)

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


class FakeNet(Internet[FakeNode]):
    """Managers on the internet, registered at beacon A (``BEACON_A``), which relays.

    The internet's knobs apply: ``drop`` (a predicate), ``duplicate``,
    ``reorder``, ``loss``, routers; :meth:`deliver` moves everything queued.
    """

    def add_node(self, node_id: int, *, behind: str | None = None) -> FakeNode:
        """A node whose Manager uses beacon A; it registers there at once."""
        manager = Manager(self.clock)
        _, network, ip = self.place(behind)
        node = FakeNode(node_id, f"node-{node_id}", (ip, 4000), manager, self.clock, network)
        manager.set_socket(_NetSocket(self, node))
        manager.set_local_node_id_fn(lambda: node_id)
        manager.set_beacon_addr_udp(BEACON_A)
        self.attach(node)
        manager.register_with_beacon()
        self.deliver()
        return node

    def deliver(self) -> int:
        """Deliver everything queued so far (and what it causes)."""
        return self.run()
