"""Micro-benchmark of the routing core's hot paths.

Run as ``.venv/bin/python benchmarks/bench_routing.py``. Measures calls per
second of ``Manager.write_frame`` on the direct path and on the relay path
(with a null sender whose ``sendto`` only returns the length) and of
``Manager.maybe_flip_blackhole``, each for about ``--seconds`` per round, best
of ``--rounds``. The target is 500,000 direct-path ``write_frame`` calls per
second on one core.

Not a test: nothing here asserts; ``main()`` prints a table and returns 0.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from natroute.routing import Addr, Manager

__all__ = ["BenchResult", "NullSender", "bench", "cpu_model", "main"]

BEACON: Addr = ("198.51.100.10", 9001)
PEER_ADDR: Addr = ("203.0.113.5", 4000)
DIRECT_PEER = 1
RELAY_PEER = 2
FRAME = b"PILS" + bytes(60)
BATCH = 10_000
TARGET_DIRECT = 500_000


class NullSender:
    """A ``SocketSender`` that sends nothing: ``sendto`` returns the length."""

    def sendto(self, data: bytes, addr: Addr, /) -> int:
        return len(data)


@dataclass
class Counters:
    """Caller counters, as the sidecar keeps them."""

    pkts_sent: int = 0
    bytes_sent: int = 0


@dataclass(frozen=True)
class BenchResult:
    """Best calls per second over the rounds, and all rounds' figures."""

    name: str
    best: float
    rounds: tuple[float, ...]


def bench(
    name: str,
    setup: Callable[[], Callable[[], object]],
    *,
    seconds: float,
    rounds: int,
) -> BenchResult:
    """Time ``rounds`` runs of the callable ``setup()`` returns, each for ``seconds``.

    The callable is invoked in batches of ``BATCH`` so loop overhead stays
    small; ``setup`` runs before each round (fresh Manager state).
    """
    rates: list[float] = []
    for _ in range(rounds):
        call = setup()
        calls = 0
        start = time.perf_counter()
        deadline = start + seconds
        now = start
        while now < deadline:
            for _ in range(BATCH):
                call()
            calls += BATCH
            now = time.perf_counter()
        rates.append(calls / (now - start))
    return BenchResult(name, max(rates), tuple(rates))


def _manager() -> Manager:
    m = Manager(time.monotonic)
    m.set_socket(NullSender())
    m.set_local_node_id_fn(lambda: 0x0A0B0C0D)
    m.set_beacon_addr_udp(BEACON)
    # A live direct peer: heard from just now, so every check is a non-miss.
    m.record_direct_recv(DIRECT_PEER, time.monotonic())
    m.set_relay_peer_pinned(RELAY_PEER, True)
    return m


def _direct() -> Callable[[], object]:
    m, counters = _manager(), Counters()
    return lambda: m.write_frame(DIRECT_PEER, PEER_ADDR, FRAME, counters)


def _relay() -> Callable[[], object]:
    m, counters = _manager(), Counters()
    return lambda: m.write_frame(RELAY_PEER, None, FRAME, counters)


def _flip() -> Callable[[], object]:
    m = _manager()
    return lambda: m.maybe_flip_blackhole(DIRECT_PEER)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=1.5, help="duration of one round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per benchmark (best wins)")
    args = parser.parse_args(argv)

    print(f"Python {platform.python_version()} ({platform.python_implementation()})")
    print(f"CPU    {cpu_model()}")
    print(f"rounds {args.rounds} x {args.seconds:.1f} s, best of rounds\n")
    cases = [
        ("write_frame direct", _direct),
        ("write_frame relay", _relay),
        ("maybe_flip_blackhole", _flip),
    ]
    results = [bench(n, s, seconds=args.seconds, rounds=args.rounds) for n, s in cases]
    print(f"{'benchmark':<22} {'calls/s (best)':>15} {'ns/call':>9}   rounds (calls/s)")
    print("-" * 78)
    for r in results:
        rounds = ", ".join(f"{x:,.0f}" for x in r.rounds)
        print(f"{r.name:<22} {r.best:>15,.0f} {1e9 / r.best:>9.0f}   {rounds}")
    direct = results[0].best
    verdict = "meets" if direct >= TARGET_DIRECT else "is BELOW"
    print(f"\ndirect-path write_frame {verdict} the {TARGET_DIRECT:,} calls/s target")
    return 0


if __name__ == "__main__":
    sys.exit(main())
