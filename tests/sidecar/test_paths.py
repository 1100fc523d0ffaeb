"""Path behaviour of live sidecars on loopback: blackhole → relay → healed,
spoofed beacon messages, unauthenticated frames, cold start from the cache."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from natroute.beacon.testing import running_beacon
from natroute.registry.settings import DEV_TOKEN
from natroute.routing.refresh import ListSource
from natroute.routing.selection import pick_beacon
from natroute.routing.wire import PunchCommand, RelayDeliver, encode_message
from natroute.sidecar.appclient import AsyncAppClient
from natroute.sidecar.crypto import FRAME_MAGIC
from natroute.sidecar.identity import load_or_create_identity
from natroute.sidecar.metrics import SidecarMetrics
from natroute.sidecar.model import DropReason
from natroute.sidecar.peers import Path as PeerPath
from natroute.sidecar.peers import PathReason
from natroute.sidecar.service import Sidecar
from natroute.sidecar.status import build_status
from natroute.sidecar.testing import Stack, running_sidecar, running_stack

from .helpers import Pump, node, node_id, peer_of, wait_for
from .impair import ImpairmentProxy

# Thresholds shortened 8x (blackhole 8 s → 1 s) so a partition flips in ~1.5 s.
FAST = {
    "blackhole_threshold": 1.0,
    "probe_initial_interval": 0.5,
    "probe_max_interval": 1.0,
    "peer_keepalive_interval": 0.5,
    "check_window": 3.0,
}


@asynccontextmanager
async def proxied_pair(
    stack: Stack, **overrides: Any
) -> AsyncIterator[tuple[Sidecar, Sidecar, list[ImpairmentProxy]]]:
    """Two sidecars whose direct path runs through impairment proxies."""
    proxies = [ImpairmentProxy(), ImpairmentProxy()]
    addrs = [await p.start() for p in proxies]
    try:
        settings = [
            stack.sidecar_settings(
                name,
                advertise=f"{addr[0]}:{addr[1]}",
                host_candidates=False,
                **{**FAST, **overrides},
            )
            for name, addr in zip(("a", "b"), addrs, strict=True)
        ]
        async with running_sidecar(settings[0]) as a, running_sidecar(settings[1]) as b:
            proxies[0].target = a.bound_addr
            proxies[1].target = b.bound_addr
            yield a, b, proxies
    finally:
        for p in proxies:
            p.close()


def path_of(a: Sidecar, b: Sidecar) -> tuple[PeerPath | None, PathReason] | None:
    peer = node(a).peers.get(node_id(b))
    return None if peer is None else (peer.path, peer.reason)


@pytest.mark.asyncio
async def test_partition_flips_to_relay_and_heals_back_to_direct(tmp_path: Path) -> None:
    async with (
        running_stack(tmp_path) as stack,
        proxied_pair(stack) as (a, b, proxies),
        Pump(a, b) as pump,
    ):
        b_id = node_id(b)
        await pump.delivered(5, limit=10)
        await wait_for(lambda: peer_of(a, b).direct_recv > 0, "a direct receipt from b", 5)
        assert path_of(a, b) == (PeerPath.DIRECT, PathReason.CHECKED)
        assert not a.manager.is_relay_peer(b_id)

        for p in proxies:
            p.blocked = True
        await wait_for(lambda: a.manager.is_relay_peer(b_id), "a to flip b to relay", 10)
        assert path_of(a, b) == (PeerPath.RELAY, PathReason.BLACKHOLE)
        assert a.manager.is_relay_pinned(b_id)
        await pump.delivered(10, limit=10)  # delivery continues through the beacon

        for p in proxies:
            p.blocked = False
        await wait_for(
            lambda: path_of(a, b) == (PeerPath.DIRECT, PathReason.DIRECT_RESTORED),
            "a to restore the direct path to b",
            15,
        )
        assert not a.manager.is_relay_peer(b_id)
        assert not a.manager.is_relay_pinned(b_id)
        await pump.delivered(5, limit=10)
        reasons = [e.reason for e in peer_of(a, b).events]
        assert reasons[:4] == [
            PathReason.CHECKING,
            PathReason.CHECKED,
            PathReason.BLACKHOLE,
            PathReason.DIRECT_RESTORED,
        ]


@pytest.mark.asyncio
async def test_three_sidecars_all_pairs_deliver(tmp_path: Path) -> None:
    async with (
        running_stack(tmp_path) as stack,
        running_sidecar(stack.sidecar_settings("a")) as a,
        running_sidecar(stack.sidecar_settings("b")) as b,
        running_sidecar(stack.sidecar_settings("c")) as c,
    ):
        for x, y in ((a, b), (b, c), (c, a), (b, a), (c, b), (a, c)):
            async with Pump(x, y) as pump:
                await pump.delivered(3, limit=10)


def _udp() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


@pytest.mark.asyncio
async def test_spoofed_beacon_messages_and_forged_frames_change_nothing(tmp_path: Path) -> None:
    async with (
        running_stack(tmp_path) as stack,
        running_sidecar(stack.sidecar_settings("a")) as a,
        running_sidecar(stack.sidecar_settings("b")) as b,
    ):
        async with Pump(a, b) as pump:
            await pump.delivered(3, limit=10)
        assert a.bound_addr is not None
        b_id = node_id(b)
        before = a.manager.peer_routing(b_id)
        peer_addr = node(a).peers.get(b_id).chosen  # type: ignore[union-attr]
        victim = _udp()
        attacker = _udp()
        try:
            drops = node(a).drops.copy()
            vaddr = victim.getsockname()
            # a punch command from a non-beacon address must not make a send anything
            attacker.sendto(encode_message(PunchCommand((vaddr[0], vaddr[1]))), a.bound_addr)
            # a relay delivery from a non-beacon address is not accepted
            forged = FRAME_MAGIC + b_id.to_bytes(4, "big") + os.urandom(60)
            attacker.sendto(encode_message(RelayDeliver(b_id, forged)), a.bound_addr)
            # a forged encrypted frame claiming to be b does not authenticate
            attacker.sendto(forged, a.bound_addr)
            await wait_for(
                lambda: (
                    node(a).drops[DropReason.AUTH_FAILED] > drops[DropReason.AUTH_FAILED]
                    and node(a).drops[DropReason.NOT_FROM_BEACON]
                    >= drops[DropReason.NOT_FROM_BEACON] + 2
                ),
                "the three datagrams to be dropped",
                5,
            )
            await asyncio.sleep(0.2)
            with pytest.raises(BlockingIOError):
                victim.recvfrom(100)
            after = a.manager.peer_routing(b_id)
            assert after.relay == before.relay
            assert after.pinned == before.pinned
            assert node(a).peers.get(b_id).chosen == peer_addr  # type: ignore[union-attr]
            assert after.last_direct_recv is not None
            assert before.last_direct_recv is not None
        finally:
            victim.close()
            attacker.close()


@pytest.mark.asyncio
async def test_cold_start_with_registry_down_uses_the_beacon_cache(tmp_path: Path) -> None:
    async with running_stack(tmp_path, advertise_host="localhost") as stack:
        settings = stack.sidecar_settings("a", beacons="")
        async with running_sidecar(settings) as a:
            first_id = node_id(a)
            assert a.last_refresh is not None
            assert a.last_refresh.source is ListSource.REGISTRY
            beacon = a.selection.get_current_pick()
            assert beacon.startswith("localhost:")
        assert (tmp_path / "a" / "beacons.json").exists()
        down = settings.model_copy(update={"registry_url": "http://127.0.0.1:9"})
        async with running_sidecar(down) as cold:
            assert node_id(cold) == first_id
            assert not cold.registered
            assert cold.last_refresh is not None
            assert cold.last_refresh.source is ListSource.CACHE
            assert cold.selection.get_current_pick() == beacon
            assert cold.manager.beacon_addr() == ("127.0.0.1", stack.beacons[0].udp_addr[1])


@pytest.mark.asyncio
async def test_relay_only_node_is_relayed_from_the_first_datagram(tmp_path: Path) -> None:
    async with (
        running_stack(tmp_path) as stack,
        running_sidecar(stack.sidecar_settings("a")) as a,
        running_sidecar(stack.sidecar_settings("s", relay_only=True)) as s,
        Pump(a, s) as pump,
    ):
        await pump.delivered(3, limit=10)
        assert path_of(a, s) is not None
        assert path_of(a, s)[0] is PeerPath.RELAY  # type: ignore[index]
        assert a.manager.is_relay_pinned(node_id(s))
        assert peer_of(a, s).direct_recv == 0
        assert peer_of(s, a).relay_recv > 0
        await wait_for(
            lambda: path_of(a, s) == (PeerPath.RELAY, PathReason.RELAY_ONLY),
            "a's checks of s to end",
            10,
        )
        assert [e.reason for e in peer_of(a, s).events] == [
            PathReason.NO_CANDIDATES,
            PathReason.RELAY_ONLY,
        ]
        assert not peer_of(a, s).candidates  # a relay-only node publishes no address
        assert peer_of(s, a).path is PeerPath.RELAY
        assert peer_of(s, a).reason is PathReason.FORCED_RELAY


@pytest.mark.asyncio
async def test_icmp_unreachable_is_charged_to_the_address_it_concerns(tmp_path: Path) -> None:
    """IP_RECVERR attributes port-unreachable errors by destination (docs/decisions.md D20)."""
    closed = _udp()
    dead_addr = closed.getsockname()
    closed.close()  # nothing listens there now: the kernel answers ICMP port unreachable
    async with (
        running_stack(tmp_path) as stack,
        running_sidecar(stack.sidecar_settings("a", check_window=30.0)) as a,
        running_sidecar(stack.sidecar_settings("b")) as b,
        running_sidecar(
            stack.sidecar_settings(
                "dead", advertise=f"{dead_addr[0]}:{dead_addr[1]}", host_candidates=False
            )
        ) as dead,
    ):
        dead_id = node_id(dead)
        await dead.stop()  # keep its registration, silence its socket
        async with Pump(a, b) as good:
            await good.delivered(3, limit=10)
            app = AsyncAppClient(a.app_addr or ("", 0))
            try:
                await app.send(dead_id, b"anyone there?")
                await wait_for(
                    lambda: any(
                        c.failed_at is not None
                        for c in getattr(node(a).peers.get(dead_id), "candidates", {}).values()
                    ),
                    "the dead candidate to be marked failed",
                    5,
                )
            finally:
                app.sock.close()
            assert path_of_id(a, dead_id) == (PeerPath.RELAY, PathReason.CHECKING)
            assert a.icmp_errors_attributed > 0
            # the healthy peer was never charged for the dead peer's errors
            assert a.manager.send_err_count(node_id(b)) == 0
            assert not a.manager.is_relay_peer(node_id(b))
            await good.delivered(3, limit=10)


@pytest.mark.asyncio
async def test_icmp_unreachable_moves_a_direct_peer_to_the_relay(tmp_path: Path) -> None:
    async with (
        running_stack(tmp_path) as stack,
        running_sidecar(stack.sidecar_settings("a", **FAST)) as a,
    ):
        b = Sidecar(stack.sidecar_settings("b", **FAST))
        await b.start()
        try:
            async with Pump(a, b) as pump:
                await pump.delivered(3, limit=10)
                await wait_for(
                    lambda: path_of(a, b) == (PeerPath.DIRECT, PathReason.CHECKED),
                    "a direct path",
                    10,
                )
                b_id = node_id(b)
                await b.stop()  # its socket closes: a's sends now draw port unreachable
                await wait_for(
                    lambda: path_of_id(a, b_id) == (PeerPath.RELAY, PathReason.ICMP_UNREACHABLE),
                    "a to move b to the relay on ICMP errors",
                    10,
                )
                assert a.manager.is_relay_pinned(b_id)
        finally:
            await b.stop()


def path_of_id(a: Sidecar, node_id: int) -> tuple[PeerPath | None, PathReason] | None:
    peer = node(a).peers.get(node_id)
    return None if peer is None else (peer.path, peer.reason)


@pytest.mark.asyncio
async def test_dead_beacon_fails_over_and_relayed_pair_recovers(tmp_path: Path) -> None:
    fast = {"beacon_keepalive_interval": 0.2, "beacon_dead_after": 1.0, "beacon_quarantine": 0.5}
    async with (
        running_stack(tmp_path, beacons=2, gossip_interval=0.2) as stack,
        running_sidecar(stack.sidecar_settings("a", **fast)) as a,
        running_sidecar(stack.sidecar_settings("s", relay_only=True, **fast)) as s,
        Pump(a, s) as pump,
    ):
        await pump.delivered(3, limit=10)
        first = a.selection.get_current_pick()
        dead = next(b for b in stack.beacons if b.udp_addr[1] == int(first.rsplit(":", 1)[1]))
        dead_port = dead.udp_addr[1]
        await dead.stop()
        await wait_for(lambda: a.selection.get_current_pick() != first, "a to fail over", 10)
        assert first in a.health.quarantine
        await wait_for(lambda: s.selection.get_current_pick() != first, "s to fail over", 10)
        await pump.delivered(5, limit=10)  # the relayed pair recovered on the other beacon

        dead_id = dead.core.config.beacon_id
        async with running_beacon(
            listen=f"127.0.0.1:{dead_port}",
            beacon_id=dead_id,
            registry_url=stack.registry_url,
            registry_token=DEV_TOKEN,
            gossip_interval=0.2,
        ) as revived:
            for beacon in (*(b for b in stack.beacons if b is not dead), revived):
                await beacon.refresh_peers()  # the beacons learn of each other again
            await asyncio.sleep(0.6)  # past the quarantine: the next refresh probes it
            await a.refresh_now()
            assert first not in a.health.quarantine
            assert a.selection.get_current_pick() == first  # the hash pick is back
            await pump.delivered(3, limit=10)


@pytest.mark.asyncio
async def test_an_unusable_beacon_is_skipped_and_named(tmp_path: Path) -> None:
    """Issue 13: a bad bootstrap entry the hash picks never leaves the node beaconless."""
    bad = "beacon.invalid:9001"
    async with running_stack(tmp_path, advertise_host="localhost") as stack:
        good = f"localhost:{stack.beacons[0].udp_addr[1]}"
        merged = sorted([bad, good])
        identity = tmp_path / "a" / "identity.json"

        def unlucky_identity() -> None:
            while True:  # an identity whose hash pick is the bad entry
                key = load_or_create_identity(str(identity)).ed25519_public
                if pick_beacon(merged, key) == bad:
                    return
                identity.unlink()

        await asyncio.to_thread(unlucky_identity)
        async with running_sidecar(stack.sidecar_settings("a", beacons=bad)) as a:
            assert a.selection.get_current_pick() == good
            assert bad in a.health.quarantine
            assert a.ready


@pytest.mark.asyncio
async def test_a_beacon_listed_under_two_names_counts_once(tmp_path: Path) -> None:
    async with (
        running_stack(tmp_path, advertise_host="localhost") as stack,
        running_sidecar(stack.sidecar_settings("a")) as a,
    ):
        status = build_status(a)
        port = stack.beacons[0].udp_addr[1]
        assert set(status.beacon.beacons) == {f"127.0.0.1:{port}", f"localhost:{port}"}
        assert status.beacon.distinct == 1
        text = SidecarMetrics().render(status).decode()
        assert "natroute_sidecar_beacons 1.0" in text
