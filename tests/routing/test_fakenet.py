"""Two Managers over an in-memory network: the direct path dies, relay takes over, it heals.

Exercises the caller's send/receive path (spec §7.2, §7.3) end to end with
the real Manager: blackhole flip (§6.10), relay activation (§6.7), beacon-
sourced miss resets (§6.8), the unpin of D19 and the three-receipt auto-clear.
"""

from __future__ import annotations

import pytest

from natroute.routing import Addr

from .fakes import Datagram, FakeClock, FakeNet

BEACON: Addr = ("198.51.100.10", 9001)
ADDR_A: Addr = ("203.0.113.1", 4001)
ADDR_B: Addr = ("203.0.113.2", 4002)


def direct(d: Datagram) -> bool:
    """A datagram between the two nodes that does not touch the beacon."""
    return BEACON not in (d[0], d[1])


@pytest.mark.parametrize(
    ("duplicate", "reorder"), [(False, False), (True, False), (False, True), (True, True)]
)
def test_direct_path_dies_relay_takes_over_then_heals(duplicate: bool, reorder: bool) -> None:
    clock = FakeClock()
    net = FakeNet(BEACON, clock, seed=7)
    net.duplicate, net.reorder = duplicate, reorder
    a = net.add_node(1, ADDR_A)
    b = net.add_node(2, ADDR_B)
    a.peers[2] = ADDR_B
    b.peers[1] = ADDR_A

    # Healthy direct path both ways.
    a.send(2, b"hello")
    b.send(1, b"hi")
    net.deliver()
    assert (1, b"hello", ADDR_A) in b.received
    assert (2, b"hi", ADDR_B) in a.received
    assert a.manager.has_direct_recv(2)

    # The direct path dies; after 8 s of silence A's third frame goes via the beacon.
    net.drop = direct
    clock.advance(9)
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
    clock.advance(30)
    a.manager.unpin_relay_peer(2)
    for _ in range(3):
        net.send(ADDR_A, ADDR_B, b"PILS" + (1).to_bytes(4, "big") + b"probe")
        net.deliver()
    assert 1 in b.cleared
    assert not b.manager.is_relay_peer(1)
    # B now answers directly; three direct receipts clear A's unpinned flag too.
    for n in range(3):
        b.send(1, b"b%d" % n)
        net.deliver()
    assert 2 in a.cleared
    assert not a.manager.is_relay_peer(2)
    assert a.peers[2] == ADDR_B
    # Both directions are direct again.
    sent_before = len(net.beacon_seen)
    a.send(2, b"direct-again")
    b.send(1, b"direct-too")
    net.deliver()
    assert len(net.beacon_seen) == sent_before
    assert a.manager.relay_peer_ids() == b.manager.relay_peer_ids() == []
    assert a.manager.relay_peer_count() == b.manager.relay_peer_count() == 1  # D4


def test_pinned_peer_stays_on_relay_without_unpin() -> None:
    clock = FakeClock()
    net = FakeNet(BEACON, clock)
    a = net.add_node(1, ADDR_A)
    b = net.add_node(2, ADDR_B)
    a.peers[2] = ADDR_B
    a.manager.set_relay_peer_pinned(2, True)
    b.peers[1] = ADDR_A
    for n in range(5):
        b.send(1, b"d%d" % n)  # direct receipts at A
        net.deliver()
    assert a.cleared == []
    assert a.manager.is_relay_peer(2)
    a.send(2, b"still-relayed")
    net.deliver()
    assert (1, b"still-relayed", BEACON) in b.received


def test_stray_beacon_messages_from_non_beacon_are_ignored() -> None:
    """The caller accepts RelayDeliver only from its beacon (spec §7.3, D15)."""
    clock = FakeClock()
    net = FakeNet(BEACON, clock)
    a = net.add_node(1, ADDR_A)
    net.add_node(2, ADDR_B)
    net.send(ADDR_B, ADDR_A, b"\x06" + (2).to_bytes(4, "big") + b"PILS\x00\x00\x00\x02x")
    net.send(ADDR_B, BEACON, b"PILS raw frame to the beacon is dropped")
    net.deliver()
    assert a.received == []
    assert not a.manager.is_relay_peer(2)
