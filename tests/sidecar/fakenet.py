"""The sidecar's engine hosts on the tests' in-memory internet (``tests/internet.py``).

Hosts run a real :class:`~natroute.sidecar.engine.Engine` driving a real
routing ``Manager`` on the internet's :class:`FakeClock`; the internet's two
real beacons relay and punch for them, a dictionary stands in for the
registry, and :class:`FakeNet` plays the sidecar's shell (moving each
engine's outputs after every input). A host owns its peer socket (index 0)
and the spray sockets its engine asks for (port prediction), each with its
own port.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from natroute.beacon.auth import sign_discover
from natroute.routing.config import ManagerConfig
from natroute.routing.manager import Manager
from natroute.routing.types import Addr
from natroute.sidecar.candidates import Candidate, CandidateKind, SelfAddrs
from natroute.sidecar.engine import Engine
from natroute.sidecar.model import NatType, NodeConfig, PeerInfo, PredictConfig
from natroute.sidecar.observer import Observer
from tests.internet import (
    BEACON_A,
    BEACON_B,
    PRESETS,
    WALL,
    Datagram,
    FakeClock,
    Filtering,
    Internet,
    Mapping,
    NatSpec,
    Router,
)

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


def public_key(key: X25519PrivateKey) -> bytes:
    """Raw X25519 public key bytes."""
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


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

    def datagram_received(self, data: bytes, src: Addr, now: float) -> None:
        """The internet delivers a datagram to the engine."""
        self.engine.datagram_received(data, src, now)

    def send_failed(self, dst: Addr, err: OSError, now: float) -> None:
        """An ICMP error for a datagram the engine sent."""
        self.engine.send_failed(dst, err, now)

    def peer(self, other: Host) -> object:
        """Our engine's record of ``other`` (asserted to exist)."""
        peer = self.engine.peers.get(other.node_id)
        assert peer is not None, f"{self.name} does not know {other.name}"
        return peer


class FakeNet(Internet[Host]):
    """The internet with engine hosts, a registry table and the sidecar shell's job."""

    def __init__(
        self,
        *,
        seed: int = 0,
        node_config: NodeConfig | None = None,
        manager_config: ManagerConfig | None = None,
        predict: PredictConfig | None = None,
    ) -> None:
        super().__init__(seed=seed)
        self.predict = predict
        self.node_config = node_config or NodeConfig(keepalive_interval=5.0)
        self.manager_config = manager_config or ManagerConfig()
        self.registry: dict[int, PeerInfo] = {}
        self.hosts: dict[str, Host] = {}
        self.auto_answer = True

    # -- building -------------------------------------------------------------

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
        n, network, ip = self.place(behind)
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
        self.attach(host)
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
        extra = sign_discover(host.ed25519, host.node_id, int(WALL))
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

    def local_socket(self, target: Host, port: int) -> int | None:
        """The host's peer socket or the spray socket bound to ``port``."""
        return target.socket_of(port)

    def received(self, target: Host, data: bytes, src: Addr, local: int = 0) -> None:
        """The engine takes the datagram on socket ``local``; its answers go out at once."""
        target.engine.datagram_received(data, src, self.clock(), local)
        self.flush(target)

    def icmp(self, sender: Host | None, dst: Addr, code: int, src: Addr | None = None) -> None:
        """The engine hears of the ICMP error (on the socket that sent); its answers go out."""
        if sender is not None:
            local = (sender.socket_of(src[1]) if src is not None else None) or 0
            err = OSError(code, os.strerror(code))
            sender.engine.send_failed(dst, err, self.clock(), local)
            self.flush(sender)

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
