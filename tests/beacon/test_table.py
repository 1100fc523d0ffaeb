"""Unit tests of the node table: cap, TTL, prefix quotas and eviction (issue 10 item 6)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from natroute.beacon.auth import sign_discover
from natroute.beacon.config import BeaconConfig
from natroute.beacon.core import BeaconCore
from natroute.beacon.prefix import net_key, source_key
from natroute.beacon.stats import DropReason
from natroute.beacon.table import NodeEntry, NodeTable, Refusal
from natroute.routing.types import Addr
from natroute.routing.wire import Discover, encode_message

from .fakes import FakeClock

A: Addr = ("198.51.100.1", 4000)
B: Addr = ("203.0.113.7", 5000)
KEY = b"k" * 32
WALL = 1_800_000_000.0


def added(result: NodeEntry | Refusal) -> NodeEntry:
    assert isinstance(result, NodeEntry)
    return result


def test_cap_ttl_and_order() -> None:
    table = NodeTable(cap=2, ttl=10.0)
    added(table.add(1, A, 0.0))
    added(table.add(2, B, 1.0))
    assert table.add(3, A, 2.0) is Refusal.FULL
    entry = table.get(1, 5.0)
    assert entry is not None
    table.touch(1, entry, 5.0)
    assert list(table.live_ids(5.0)) == [1, 2]
    assert list(table.live_ids(11.0)) == [1]
    added(table.add(3, A, 11.0))  # node 2 expired: evicted
    assert table.get(2, 11.0) is None
    added(table.add(1, B, 12.0))  # replacing an existing ID is not an insert
    assert len(table) == 2
    assert table.sweep(21.5) == 1
    assert len(table) == 1
    assert table.sweep(100.0) == 1
    assert table.sweep(100.0) == 0
    assert table.prefixes() == 0


def test_signed_newcomer_evicts_least_recently_seen_unsigned() -> None:
    table = NodeTable(cap=3, ttl=100.0)
    added(table.add(1, ("192.0.2.1", 1), 0.0))
    added(table.add(2, ("192.0.2.2", 1), 1.0))
    added(table.add(3, ("192.0.2.3", 1), 2.0, pubkey=KEY))
    one = table.get(1, 3.0)
    assert one is not None
    table.touch(1, one, 3.0)  # node 2 is now the least recently seen unsigned entry
    assert table.add(4, A, 4.0) is Refusal.FULL  # unsigned newcomers never evict
    added(table.add(4, A, 4.0, pubkey=KEY))
    assert table.get(2, 4.0) is None
    assert table.evictions == 1
    added(table.add(5, B, 5.0, pubkey=KEY))  # evicts node 1
    assert table.add(6, B, 6.0, pubkey=KEY) is Refusal.FULL  # only signed entries left
    assert sorted(table.live_ids(6.0)) == [3, 4, 5]
    assert table.signed == 3


def test_expired_entries_make_room_before_any_eviction() -> None:
    table = NodeTable(cap=2, ttl=10.0)
    added(table.add(1, A, 0.0, pubkey=KEY))
    added(table.add(2, B, 5.0))
    added(table.add(3, ("192.0.2.9", 1), 10.0, pubkey=KEY))  # the expired signed one goes
    assert table.get(2, 10.0) is not None
    assert table.evictions == 0


def test_quota_per_address_and_per_net() -> None:
    table = NodeTable(cap=100, ttl=10.0, quota_host=2, quota_net=3)
    added(table.add(1, ("192.0.2.1", 1), 0.0))
    added(table.add(2, ("192.0.2.1", 2), 0.0, pubkey=KEY))
    assert table.add(3, ("192.0.2.1", 3), 0.0, pubkey=KEY) is Refusal.QUOTA
    added(table.add(3, ("192.0.2.2", 3), 0.0))
    assert table.add(4, ("192.0.2.3", 1), 0.0) is Refusal.QUOTA  # the /24 is full
    added(table.add(4, ("192.0.3.1", 1), 0.0))  # another /24
    # Re-adding an ID frees its old charge first.
    added(table.add(1, ("192.0.2.3", 1), 1.0))
    # A move to a full prefix is refused and leaves the entry where it was.
    entry = table.get(4, 1.0)
    assert entry is not None
    assert table.move(4, entry, ("192.0.2.4", 1), 1.0) is Refusal.QUOTA
    assert entry.addr == ("192.0.3.1", 1)
    assert table.move(4, entry, ("192.0.3.1", 9), 2.0) is None  # same prefixes
    assert entry.addr == ("192.0.3.1", 9)
    table.sweep(20.0)
    assert table.prefixes() == 0


def test_quota_ipv6_prefixes() -> None:
    table = NodeTable(cap=100, ttl=10.0, quota_host=1, quota_net=2)
    added(table.add(1, ("2001:db8:1:1::1", 1), 0.0))
    assert table.add(2, ("2001:db8:1:1::2", 1), 0.0) is Refusal.QUOTA  # same /64
    added(table.add(2, ("2001:db8:1:2::1", 1), 0.0))
    assert table.add(3, ("2001:db8:1:3::1", 1), 0.0) is Refusal.QUOTA  # same /48
    added(table.add(3, ("2001:db8:2::1", 1), 0.0))


def test_quota_charges_the_given_ip_not_the_address() -> None:
    table = NodeTable(cap=100, ttl=10.0, quota_host=1)
    session: Addr = ("stream", 1)
    entry = added(table.add(1, session, 0.0, ip="192.0.2.1", pubkey=KEY))
    assert table.add(2, ("192.0.2.1", 5), 0.0) is Refusal.QUOTA
    assert not table.remove(1, ("stream", 2))
    assert table.remove(1, session)
    assert not table.remove(1, session)
    added(table.add(2, ("192.0.2.1", 5), 0.0))
    assert entry.ip == "192.0.2.1"


def test_bind_and_unbind_move_an_entry_between_kinds() -> None:
    table = NodeTable(cap=10, ttl=10.0)
    entry = added(table.add(1, A, 0.0))
    table.bind(1, entry, KEY, 5)
    table.bind(1, entry, KEY, 3)  # time never goes back
    assert (table.signed, entry.auth_time) == (1, 5)
    table.unbind(1, entry)
    table.unbind(1, entry)
    assert (table.signed, entry.pubkey, entry.auth_time) == (0, None, -1)
    assert len(table) == 1


@pytest.mark.parametrize(
    ("ip", "host", "net"),
    [
        ("192.0.2.77", "192.0.2.77", "192.0.2.0/24"),
        ("2001:db8:aa:bb:cc::1", "2001:db8:aa:bb::/64", "2001:db8:aa::/48"),
    ],
)
def test_prefix_keys(ip: str, host: str, net: str) -> None:
    assert (source_key(ip), net_key(ip)) == (host, net)


def test_core_flood_cannot_lock_out_a_new_signed_node() -> None:
    """Issue 10 item 6 at the core: a full table still admits a legitimate signed node."""
    wall = FakeClock(WALL)
    clock = FakeClock()
    core = BeaconCore(
        BeaconConfig(beacon_id=1, node_cap=64, node_quota_host=4, node_quota_net=0),
        wall_clock=wall,
    )
    for i in range(200):  # 50 attacker addresses, 4 IDs each (the host quota)
        core.handle_datagram(encode_message(Discover(1000 + i)), (f"10.0.{i // 4}.1", 1), clock())
    assert len(core.nodes) == 64
    assert core.counters.drops[DropReason.TABLE_FULL] == 200 - 64
    key = Ed25519PrivateKey.generate()
    signed = encode_message(Discover(7, sign_discover(key, 7, int(WALL))))
    assert core.handle_datagram(signed, A, clock()) != []
    assert core.nodes.get(7, clock()) is not None
    assert core.snapshot().evicted_nodes == 1
    # The quota: one address cannot hold more than 4 entries.
    for i in range(10):
        core.handle_datagram(
            encode_message(Discover(5000 + i, sign_discover(key, 5000 + i, int(WALL)))),
            ("10.9.9.9", 1),
            clock(),
        )
    assert core.counters.drops[DropReason.QUOTA] == 6
