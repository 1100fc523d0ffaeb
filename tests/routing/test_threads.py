"""Thread safety: selection state and the Manager's lock under concurrency.

docs/protocol.md, "Threads and time"; the last upstream scenario (concurrent
compute/apply from many threads).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from natroute.routing import (
    BeaconSelectionState,
    Manager,
    compute_refresh_decision,
)

from .fakes import Counters, FakeClock, RecordingSender

THREADS = 8


def run_threads(target: Callable[[int], None], n: int = THREADS) -> None:
    """Start ``n`` threads behind a barrier, join them all, re-raise the first error."""
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def body(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            target(i)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    if errors:
        raise errors[0]


def test_s8_61_concurrent_compute_and_apply() -> None:
    state = BeaconSelectionState(["boot:1", "boot:2"])
    lists = [[f"disc:{i}", f"disc:{i + 1}"] for i in range(THREADS)]
    picks: list[str] = []
    lock = threading.Lock()

    def cycle(i: int) -> None:
        for n in range(50):
            d = compute_refresh_decision(state, lists[(i + n) % THREADS], b"key-%d" % i)
            state.apply_refresh_decision(d)
            pick = state.get_current_pick()
            with lock:
                picks.append(pick)

    run_threads(cycle)
    assert len(picks) == THREADS * 50
    bootstrap, current_list, pick = state.snapshot()
    assert bootstrap == ["boot:1", "boot:2"]
    assert pick in current_list or pick in {a for lst in lists for a in lst} | set(bootstrap)
    assert all(p != "" for p in picks)


class SafeSender(RecordingSender):
    """A recording sender that is itself thread-safe."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()

    def sendto(self, data: bytes, addr: tuple[str, int], /) -> int:
        with self._lock:
            return super().sendto(data, addr)


def test_concurrent_write_frame_and_bookkeeping() -> None:
    clock = FakeClock()
    sock = SafeSender()
    m = Manager(clock)
    m.set_socket(sock)
    m.set_beacon_addr_udp(("198.51.100.10", 9001))
    per_thread = 200
    counters = [Counters() for _ in range(THREADS)]

    def work(i: int) -> None:
        peer = (i // 2) % 4 + 1  # each peer has one writer and one bookkeeper
        for n in range(per_thread):
            if i % 2 == 0:
                m.write_frame(peer, ("203.0.113.9", 4000 + peer), b"PILSxxxx", counters[i])
            else:
                m.record_direct_recv(peer, clock())
                m.record_outbound_send(peer, clock())
                m.clear_relay_on_direct(peer, ("203.0.113.9", 4000 + peer))
                m.set_relay_peer(peer, n % 2 == 0)
                m.maybe_flip_blackhole(peer)

    run_threads(work)
    writers = THREADS // 2
    assert len(sock.sent) == writers * per_thread
    assert sum(c.pkts_sent for c in counters) == writers * per_thread
    assert sum(c.bytes_sent for c in counters) == sum(len(d) for d, _ in sock.sent)
    assert sorted(m.peer_ids()) == [1, 2, 3, 4]
    assert m.relay_peer_count() == 4
    assert m.untracked_count() == 0
    for peer in range(1, 5):
        assert m.last_outbound_send(peer) == clock()


def test_concurrent_flip_counts_each_miss_once() -> None:
    """Misses are counted under one lock: 8 threads x 1 call flip exactly once."""
    clock = FakeClock()
    m = Manager(clock)
    m.set_beacon_addr_udp(("198.51.100.10", 9001))
    m.record_direct_recv(1, clock() - 9)
    results: list[tuple[bool, bool, float, int]] = []
    lock = threading.Lock()

    def flip(i: int) -> None:
        r = m.maybe_flip_blackhole(1)
        with lock:
            results.append(r)

    run_threads(flip)
    assert sum(1 for r in results if r[1]) == 1
    assert sorted(r[3] for r in results if r[3]) == [1, 2, 3]
    assert m.is_relay_pinned(1)
