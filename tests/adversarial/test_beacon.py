"""Beacons attacked over UDP from many loopback addresses (issue 10 items 5 and 6).

Each test starts a :class:`~tests.adversarial.harness.World` (a registry, two
beacons and two sidecars as real processes on 127.0.0.1) where sidecar b is
``relay_only``, so the legitimate a → b stream goes through the beacons'
relay, and then attacks the beacons from other 127/8 addresses (Linux routes
all of 127/8 to ``lo``). What must hold: the victims' entries do not move, the
stream keeps delivering during and after the attack, the beacons' memory stays
bounded. Bounded in count (a few thousand datagrams) and time (seconds).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from natroute.beacon.auth import sign_discover
from natroute.routing.addr import split_host_port
from natroute.routing.types import Addr
from natroute.routing.wire import Discover, PunchRequest, encode_message, encode_relay

from .harness import BeaconProcess, SidecarProcess, Stream, World

_MIB = 1 << 20
#: Attack rounds: within every per-address rate limit (punch burst 10 for 3 victims).
ROUNDS = 3


class Node:
    """A node's UDP socket on any loopback address, optionally signing its discovers."""

    def __init__(self, host: str = "127.0.0.1", *, signed: bool = True) -> None:
        self.key = Ed25519PrivateKey.generate() if signed else None
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.bind((host, 0))
        self.sock.settimeout(2.0)

    def discover(self, node_id: int, *, signed: bool = True) -> bytes:
        extra = b""
        if signed and self.key is not None:
            extra = sign_discover(self.key, node_id, int(time.time()))
        return encode_message(Discover(node_id, extra))

    def register(self, node_id: int, beacon: Addr) -> bool:
        """Send our discover; True when the DiscoverReply comes back."""
        self.sock.sendto(self.discover(node_id), beacon)
        return any(data[:1] == b"\x02" for data in self.drain(0.5))

    def drain(self, quiet: float = 0.2) -> list[bytes]:
        """Everything that arrives until ``quiet`` seconds pass without a datagram."""
        out = []
        self.sock.settimeout(quiet)
        try:
            while True:
                out.append(self.sock.recv(70_000))
        except TimeoutError:
            return out
        finally:
            self.sock.settimeout(2.0)

    def close(self) -> None:
        self.sock.close()


@contextmanager
def relayed_world(tmp_path: Path, *beacon_flags: str) -> Iterator[tuple[World, Stream]]:
    """A world whose a → b stream goes through the beacons (b is relay_only), delivering."""
    with World.start(tmp_path, sidecars=0, beacon_flags=beacon_flags) as world:
        a = world.add_sidecar("sidecar-a")
        b = world.add_sidecar("sidecar-b", ["--relay-only"])
        with Stream(a, b) as stream:
            stream.wait_delivered(20, timeout=20)
            yield world, stream


def beacon_of(world: World, sidecar: SidecarProcess) -> BeaconProcess:
    """The beacon a sidecar uses now."""
    pick = split_host_port(sidecar.get("/v1/status")["beacon"]["pick"])
    return next(b for b in world.beacons if b.udp_addr == pick)


def test_live_entries_are_not_taken_over_from_other_addresses(tmp_path: Path) -> None:
    """Item 5: unsigned and signed live entries survive takeover attempts with other keys."""
    with relayed_world(tmp_path) as (world, stream):
        beacon = world.beacons[0]
        upstream, peer = Node(signed=False), Node()  # an upstream daemon never signs
        assert upstream.register(0x0F0F0001, beacon.udp_addr)
        # The peer's signed discover, accepted by the beacon and captured by an attacker.
        captured = peer.discover(0x0F0F0002)
        peer.sock.sendto(captured, beacon.udp_addr)
        assert any(data[:1] == b"\x02" for data in peer.drain(0.5))
        # Each victim ID is attacked at the beacon that holds it.
        a, b = world.sidecars
        victims = [
            (0x0F0F0001, beacon),
            (a.node_id, beacon_of(world, a)),
            (b.node_id, beacon_of(world, b)),
        ]
        before = {x.http_url: x.status() for x in world.beacons}
        attackers = [Node(f"127.0.66.{i}") for i in range(1, 17)]
        try:
            for _ in range(ROUNDS):
                for attacker in attackers:
                    for victim, at in victims:
                        attacker.sock.sendto(attacker.discover(victim), at.udp_addr)  # own key
                        attacker.sock.sendto(attacker.discover(victim, signed=False), at.udp_addr)
                        attacker.sock.sendto(
                            encode_message(PunchRequest(victim, 0x0F0F0002)), at.udp_addr
                        )
                    attacker.sock.sendto(captured, beacon.udp_addr)
                stream.wait_delivered(5, timeout=10)  # during the attack
            # The upstream node still gets its relays, and only it; its keepalives answered.
            for i in range(20):
                frame = encode_relay(0x0F0F0002, 0x0F0F0001, bytes([i]))
                peer.sock.sendto(frame, beacon.udp_addr)
            assert sum(1 for d in upstream.drain() if d[:1] == b"\x06") == 20
            assert upstream.register(0x0F0F0001, beacon.udp_addr)
            for attacker in attackers:
                kinds = {data[:1] for data in attacker.drain(0.05)}
                assert kinds <= {b"\x02"}, kinds  # discover replies only: no relay, no punch
        finally:
            for node in (*attackers, upstream, peer):
                node.close()
        stream.wait_delivered(20, timeout=15)  # after the attack
        for x in world.beacons:
            now, then = x.status(), before[x.http_url]
            attacked = sum(1 for _, at in victims if at is x)
            rejected = now["drops"]["takeover_rejected"] - then["drops"]["takeover_rejected"]
            # 16 attackers x ROUNDS x 3 kinds per victim (+ the replays at beacon 0)
            replays = 16 * ROUNDS if x is beacon else 0
            assert rejected == 16 * ROUNDS * 3 * attacked + replays
            assert now["nodes"] == then["nodes"]


def test_table_flood_from_many_sources_leaves_room_for_signed_nodes(tmp_path: Path) -> None:
    """Item 6: quotas bound a signed flood; an unsigned flood yields to signed newcomers."""
    cap = 3000
    flags = ("--node-cap", str(cap), "--node-quota-host", "8", "--node-quota-net", "64")
    with relayed_world(tmp_path, *flags) as (world, stream):
        beacon = world.beacons[0]
        rss_before = beacon.process.rss_bytes()
        node_id = 1_000_000
        # A signed flood (attacker keys cost nothing): 16 /24s x 16 addresses x 12 IDs.
        for net in range(16):
            for host in range(1, 17):
                attacker = Node(f"127.1.{net}.{host}")
                for _ in range(12):
                    node_id += 1
                    attacker.sock.sendto(attacker.discover(node_id), beacon.udp_addr)
                attacker.close()
            time.sleep(0.005)
        signed = beacon.status()
        assert signed["drops"]["quota_exceeded"] > 0
        assert signed["signed_nodes"] <= 16 * 64 + 4  # the quotas held (+ the world's nodes)
        stream.wait_delivered(5, timeout=10)
        # An unsigned flood from 64 more /24s: 64 x 8 addresses x 8 IDs fills the table.
        for net in range(64):
            for host in range(1, 9):
                attacker = Node(f"127.2.{net}.{host}", signed=False)
                for _ in range(8):
                    node_id += 1
                    attacker.sock.sendto(attacker.discover(node_id), beacon.udp_addr)
                attacker.close()
            time.sleep(0.005)
        full = beacon.status()
        assert full["nodes"] == cap  # the table really is full
        assert full["drops"]["table_full"] > 0
        stream.wait_delivered(5, timeout=10)
        # A new legitimate signed node still registers, gets its reply and its relays.
        newcomer, sender = Node(), Node()
        try:
            assert newcomer.register(0x1E6171, beacon.udp_addr)
            assert sender.register(0x1E6172, beacon.udp_addr)
            sender.sock.sendto(encode_relay(0x1E6172, 0x1E6171, b"hi"), beacon.udp_addr)
            assert any(data[:1] == b"\x06" for data in newcomer.drain())
        finally:
            newcomer.close()
            sender.close()
        after = beacon.status()
        assert after["counters"]["evicted_nodes"] >= 2
        assert after["nodes"] == cap
        assert beacon.process.rss_bytes() - rss_before < 64 * _MIB
        stream.wait_delivered(20, timeout=15)
