"""Two Managers on the in-memory internet: the direct path dies, relay takes over, it heals.

Exercises the caller's send and receive paths (docs/protocol.md, "The
caller's paths") end to end with the real Manager and a real beacon: the
blackhole flip ("Blackhole heuristic"), relay activation ("Relay receipts"),
beacon-sourced miss resets ("Direct receipts and clears"), the unpin of D19,
the three-receipt auto-clear and ICMP errors from the network ("ICMP errors").
"""

from __future__ import annotations

import pytest

from .fakes import BEACON_A, Datagram, FakeNet

BEACON = BEACON_A


def direct(d: Datagram) -> bool:
    """A datagram between the two nodes that does not touch the beacon."""
    return BEACON not in (d.src, d.dst)


def at_beacon(net: FakeNet) -> int:
    """Datagrams the beacon received so far."""
    return sum(d.dst == BEACON for d in net.delivered)


@pytest.mark.parametrize(
    ("duplicate", "reorder"), [(False, False), (True, False), (False, True), (True, True)]
)
def test_direct_path_dies_relay_takes_over_then_heals(duplicate: bool, reorder: bool) -> None:
    net = FakeNet(seed=7)
    net.duplicate, net.reorder = duplicate, reorder
    a = net.add_node(1)
    b = net.add_node(2)
    a.peers[2] = b.inside
    b.peers[1] = a.inside

    # Healthy direct path both ways.
    a.send(2, b"hello")
    b.send(1, b"hi")
    net.deliver()
    assert (1, b"hello", a.inside) in b.received
    assert (2, b"hi", b.inside) in a.received
    assert a.manager.has_direct_recv(2)

    # The direct path dies; after 8 s of silence A's third frame goes via the beacon.
    net.drop = direct
    net.clock.advance(9)
    for n in range(3):
        a.send(2, b"a%d" % n)
        net.deliver()
    assert a.manager.is_relay_peer(2)
    assert a.manager.is_relay_pinned(2)
    relayed = [r for r in b.received if r[2] == BEACON]
    assert [r[1] for r in relayed][:1] == [b"a2"]
    # B learned the relay from the RelayDeliver (unpinned) and answers through it.
    assert b.manager.is_relay_peer(1)
    assert not b.manager.is_relay_pinned(1)
    b.send(1, b"via-relay")
    net.deliver()
    assert (2, b"via-relay", BEACON) in a.received
    # Relayed decrypts keep resetting the miss count but never count as direct.
    assert a.manager.blackhole_miss_count(2) == 0
    assert a.manager.last_direct_recv(2) == b.manager.last_direct_recv(1) is not None

    # The path heals. A's sidecar re-probes directly on the socket and unpins (D19).
    net.drop = lambda d: False
    net.clock.advance(30)
    a.manager.unpin_relay_peer(2)
    for _ in range(3):
        net.send(a, b"PILS" + (1).to_bytes(4, "big") + b"probe", b.inside)
        net.deliver()
    assert 1 in b.cleared
    assert not b.manager.is_relay_peer(1)
    # B now answers directly; three direct receipts clear A's unpinned flag too.
    for n in range(3):
        b.send(1, b"b%d" % n)
        net.deliver()
    assert 2 in a.cleared
    assert not a.manager.is_relay_peer(2)
    assert a.peers[2] == b.inside
    # Both directions are direct again.
    sent_before = at_beacon(net)
    a.send(2, b"direct-again")
    b.send(1, b"direct-too")
    net.deliver()
    assert at_beacon(net) == sent_before
    assert a.manager.relay_peer_ids() == b.manager.relay_peer_ids() == []
    assert a.manager.relay_peer_count() == b.manager.relay_peer_count() == 1  # D4


def test_pinned_peer_stays_on_relay_without_unpin() -> None:
    net = FakeNet()
    a = net.add_node(1)
    b = net.add_node(2)
    a.peers[2] = b.inside
    a.manager.set_relay_peer_pinned(2, True)
    b.peers[1] = a.inside
    for n in range(5):
        b.send(1, b"d%d" % n)  # direct receipts at A
        net.deliver()
    assert a.cleared == []
    assert a.manager.is_relay_peer(2)
    a.send(2, b"still-relayed")
    net.deliver()
    assert (1, b"still-relayed", BEACON) in b.received


def test_stray_beacon_messages_from_non_beacon_are_ignored() -> None:
    """The caller accepts RelayDeliver only from its beacon (D15)."""
    net = FakeNet()
    a = net.add_node(1)
    b = net.add_node(2)
    net.inject(b"\x06" + (2).to_bytes(4, "big") + b"PILS\x00\x00\x00\x02x", b.inside, a.inside)
    net.inject(b"PILS raw frame to the beacon is dropped", b.inside, BEACON)
    net.deliver()
    assert a.received == []
    assert not a.manager.is_relay_peer(2)


def test_icmp_errors_from_the_network_move_a_peer_to_the_relay() -> None:
    net = FakeNet()
    a = net.add_node(1)
    b = net.add_node(2)
    a.peers[2] = ("198.51.100.250", 4000)  # nobody there: host unreachable
    for n in range(3):
        a.send(2, b"x%d" % n)
        net.deliver()
    assert a.manager.is_relay_peer(2)
    assert a.manager.is_relay_pinned(2)
    a.send(2, b"through the beacon")
    net.deliver()
    assert (1, b"through the beacon", BEACON) in b.received
