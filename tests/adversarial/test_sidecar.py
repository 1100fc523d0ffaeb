"""Hostile input against real sidecar processes: each attack, and what must hold.

Every test runs a world of real processes on 127.0.0.1 (registry, two
beacons, two sidecars; :mod:`.harness`) with a legitimate stream between the
sidecars, attacks one sidecar the way a registered but hostile peer, a
hostile local process or an off-path spoofer can, and checks the state that
must not change, the resources that must stay bounded (read from the
process: ``/proc`` and ``/metrics``), and that the stream keeps delivering
during and after the attack. Every attack is bounded in count and time.
"""

from __future__ import annotations

import os
import random
import socket
import time
from pathlib import Path

import pytest

from natroute.routing.addr import format_addr
from natroute.routing.wire import DiscoverReply, encode_message
from natroute.sidecar.appclient import decode_app, encode_app
from natroute.sidecar.budget import BudgetConfig
from natroute.sidecar.crypto import FRAME_MAGIC
from natroute.sidecar.frames import InnerType
from natroute.sidecar.lookups import LookupConfig

from .harness import RogueNode, Stream, World, metric_value, spoofed_udp

pytestmark = pytest.mark.timeout(120)

_MB = 1024 * 1024


def test_authenticated_counter_jumps_cost_neither_memory_nor_time(tmp_path: Path) -> None:
    """Item 1: a jump of the send counter resets the replay window in O(1)."""
    with World.start(tmp_path) as world, Stream(world.sidecars[0], world.sidecars[1]) as stream:
        a, _ = world.sidecars
        stream.wait_delivered(10, timeout=10)
        peak_before = a.process.peak_rss_bytes()
        with RogueNode(world.registry.url) as rogue:
            rogue.register()
            for counter in (0, 1, 2**20, 2**30, 2**33, 2**34, 2**40, 2**62, 2**64 - 2):
                cipher = rogue.cipher_to(a, first_counter=counter)
                rogue.send(cipher.seal(bytes([InnerType.DATA]) + b"jump"), a.peer_addr)
            stream.wait_delivered(20, timeout=10)  # the loop never stalled for long
        code = a.get("/v1/peers")
        assert any(p["node_id"] == rogue.node_id and p["pkts_recv"] >= 1 for p in code)
        grown = a.process.peak_rss_bytes() - peak_before
        assert grown < 64 * _MB, f"peak RSS grew {grown / _MB:.0f} MB"
        stream.wait_delivered(10, timeout=10)


def _unknown_sender_frame(rng: random.Random) -> bytes:
    sender = rng.randrange(1, 2**32)
    return FRAME_MAGIC + sender.to_bytes(4, "big") + rng.randbytes(8 + 8 + 32)


def test_frames_from_unknown_senders_while_the_registry_hangs_stay_bounded(
    tmp_path: Path,
) -> None:
    """Item 2: one look-up per ID, a bounded queue, a pace; tasks and held frames bounded."""
    cfg = LookupConfig()
    with World.start(tmp_path) as world, Stream(world.sidecars[0], world.sidecars[1]) as stream:
        a, _ = world.sidecars
        stream.wait_delivered(10, timeout=10)
        tasks_before = metric_value(a.metrics(), "natroute_sidecar_asyncio_tasks")
        rss_before = a.process.rss_bytes()
        rng = random.Random(7)
        world.registry.process.pause()
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as attacker:
                for i in range(20_000):
                    attacker.sendto(_unknown_sender_frame(rng), a.peer_addr)
                    if i % 500 == 499:
                        time.sleep(0.02)  # ~4 s in all; the kernel buffer must not drop it all
            stream.wait_delivered(20, timeout=10)  # delivery goes on during the attack
            metrics = a.metrics()
            tasks = metric_value(metrics, "natroute_sidecar_asyncio_tasks")
            held = metric_value(metrics, "natroute_sidecar_held_frames")
            in_flight = metric_value(metrics, "natroute_sidecar_lookups_in_flight")
            queued = metric_value(metrics, "natroute_sidecar_lookups_queued")
            assert tasks <= tasks_before + 2, (tasks_before, tasks)
            assert in_flight <= cfg.max_in_flight
            assert queued <= cfg.queue_cap
            assert held <= 256 * 8
            assert a.process.rss_bytes() - rss_before < 64 * _MB
        finally:
            world.registry.process.resume()
        started_at_resume = metric_value(a.metrics(), "natroute_sidecar_lookups_started_total")
        time.sleep(3)
        started = metric_value(a.metrics(), "natroute_sidecar_lookups_started_total")
        # every ID is asked at most once (the registry says "unknown" and that is
        # remembered); the queue and the pace bound the rest
        assert started <= cfg.queue_cap + cfg.max_in_flight + 10, started
        assert started - started_at_resume <= cfg.burst + 3 * cfg.rate + cfg.max_in_flight
        stream.wait_delivered(10, timeout=10)


def test_hostile_candidates_draw_a_bounded_budget_and_never_our_own_sockets(
    tmp_path: Path,
) -> None:
    """Item 3: an endpoint naming a victim, or a sidecar's own data plane."""
    budget = BudgetConfig()
    duration = 20.0
    flags = ("--check-window", "2", "--probe-initial-interval", "1", "--probe-max-interval", "2")
    with World.start(tmp_path, sidecar_flags=flags) as world:
        a, b = world.sidecars
        with (
            Stream(b, a) as backward,  # a's application receives
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as victim,
            RogueNode(world.registry.url) as rogue,
        ):
            victim.bind(("127.0.0.1", 0))
            victim.settimeout(0.1)
            vaddr = victim.getsockname()
            backward.wait_delivered(5, timeout=10)
            rogue.register(
                endpoint=f"{vaddr[0]}:{vaddr[1]}",
                lan_addrs=[format_addr(a.app_addr), format_addr(a.peer_addr)],
            )
            attack_bytes = 0
            for target in (a, b):
                frame = rogue.cipher_to(target).seal(bytes([InnerType.DATA]) + b"hi")
                rogue.send(frame, target.peer_addr)
                attack_bytes += len(frame)
            received = 0
            deadline = time.monotonic() + duration
            while time.monotonic() < deadline:
                try:
                    received += len(victim.recv(65535))
                except TimeoutError:
                    continue
            cap = 2 * (budget.per_addr_burst + budget.per_addr_rate * duration)
            assert received <= cap, f"victim got {received} B for {attack_bytes} B (cap {cap})"
            # a refuses its own sockets as the rogue's candidates; b may probe a's data
            # plane, but that never takes a's deliveries (see the next test)
            drops = a.metrics()
            assert metric_value(drops, "natroute_sidecar_drops_total", reason="bad_candidate") >= 2
            backward.wait_delivered(10, timeout=10)  # a's application still gets everything


def test_a_local_socket_cannot_take_the_data_plane_deliveries(tmp_path: Path) -> None:
    """Item 4: the delivery address is learnt once and kept while the application lives."""
    with World.start(tmp_path) as world:
        a, b = world.sidecars
        with (
            Stream(b, a) as stream,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hijacker,
        ):
            hijacker.bind(("127.0.0.1", 0))
            hijacker.settimeout(0.1)
            stream.wait_delivered(10, timeout=10)
            for _ in range(20):
                hijacker.sendto(encode_app(b.node_id, b"mine now"), a.app_addr)
            stream.wait_delivered(30, timeout=10)
            stolen = 0
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                try:
                    src, _ = decode_app(hijacker.recv(65535))
                except TimeoutError:
                    continue
                stolen += src == b.node_id
            assert stolen == 0
            metrics = a.metrics()
            assert metric_value(metrics, "natroute_sidecar_app_foreign_sources_total") >= 1
            assert metric_value(metrics, "natroute_sidecar_app_target_changes_total") == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="spoofing a source address needs a raw socket")
def test_spoofed_discover_replies_do_not_move_the_public_endpoint(tmp_path: Path) -> None:
    """Item 8: a new endpoint needs an independent confirmation; floods are contradicted."""
    with World.start(tmp_path) as world, Stream(world.sidecars[0], world.sidecars[1]) as stream:
        a, _ = world.sidecars
        stream.wait_delivered(10, timeout=10)
        status = a.get("/v1/status")
        endpoint = status["public_endpoint"]
        host, port = status["beacon"]["addr"].rsplit(":", 1)
        beacon = (host, int(port))
        lie = encode_message(DiscoverReply(("198.51.100.77", 4444)))
        deadline = time.monotonic() + 5.0
        sent = 0
        while time.monotonic() < deadline:  # 500 a second for 5 s
            spoofed_udp(beacon, a.peer_addr, lie)
            sent += 1
            time.sleep(0.002)
        time.sleep(2.5)  # past any confirmation window
        status = a.get("/v1/status")
        assert status["public_endpoint"] == endpoint
        assert status["counters"]["endpoint_changes_rejected"] >= 1
        with RogueNode(world.registry.url) as probe:
            resolved = probe._registry.resolve(a.node_id)
        assert resolved.endpoint == endpoint
        stream.wait_delivered(10, timeout=10)
        assert sent > 1000
