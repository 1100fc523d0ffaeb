"""Every beacon figure of the README, each beside its reference in the same run.

Run as ``.venv/bin/python benchmarks/bench_beacon.py`` (``--help`` for the
knobs). It compiles two small C programs with ``cc -O2`` into a temporary
directory — by default the repository's own ``benchmarks/tools/yardstick.c``
(the least a relaying beacon can do: recvmmsg/sendmmsg, no checks) and
``benchmarks/tools/blast.c`` (a relay flooder); ``--tools DIR`` (or
``NATROUTE_BENCH_TOOLS``) uses ``DIR/cbeacon.c`` and ``DIR/relayblast.c``
instead, programs with the same command lines — and prints:

1. relay: delivered relay frames per second when ``blast`` floods a beacon
   on 127.0.0.1 (64-byte payloads by default, relay budgets off), for
   ``natroute-beacon`` as shipped (batched system calls and UDP GSO), with
   GSO off, with batching off (the asyncio transport), and for the C
   yardstick; each configuration runs ``--runs`` times, interleaved, and the
   table shows medians and the median of the per-run ratios to the yardstick;
2. start-up: seconds from starting the process to the first DiscoverReply
   (a probe sends a discover every 2 ms), ``natroute-beacon`` and the
   yardstick, medians of ``--starts`` starts. "Cold" here means a fresh
   process whose bytecode (``__pycache__``) was rebuilt beforehand (this
   script recompiles ``natroute`` first); the OS page cache is as it is;
3. the sans-I/O core alone: ``BeaconCore.handle_datagram`` relay calls/s;
4. the stream relay next to UDP relay (``bench_stream.py``).

Traffic goes to 127.0.0.1 only; every run is bounded in time. Not a test:
nothing asserts; ``main()`` prints tables (exit 1 when the tools cannot be
built). Times vary from run to run on a shared machine: read the ratios.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import natroute
from natroute.beacon.config import BeaconConfig, RateLimit
from natroute.beacon.core import BeaconCore
from natroute.routing.wire import Discover, encode_message, encode_relay

__all__ = [
    "Tools",
    "beacon_cmd",
    "bench_core",
    "blast",
    "compile_c",
    "free_port",
    "main",
    "parse_fields",
    "start_latency",
    "stop",
    "wait_started",
]

HERE = Path(__file__).parent
_OFF = RateLimit(0.0, 0.0)


@dataclass(frozen=True)
class Tools:
    """The compiled reference beacon and relay flooder."""

    beacon: Path
    blast: Path


def build_tools(source: Path | None, out: Path) -> Tools:
    """Compile the C tools (ours, or ``cbeacon.c``/``relayblast.c`` from ``source``).

    Raises:
        FileNotFoundError: no C compiler, or a source file is missing.
        subprocess.CalledProcessError: a compilation failed.
    """
    if source is None:
        beacon_c, blast_c = HERE / "tools" / "yardstick.c", HERE / "tools" / "blast.c"
    else:
        beacon_c, blast_c = source / "cbeacon.c", source / "relayblast.c"
    for path in (beacon_c, blast_c):
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing (--tools names a directory with it)")
    return Tools(
        compile_c(beacon_c, out / "yardstick"), compile_c(blast_c, out / "blast", "-pthread")
    )


def compile_c(source: Path, binary: Path, *flags: str) -> Path:
    """Compile one C file with ``-O2`` (and ``flags``) into ``binary``.

    Raises:
        FileNotFoundError: no C compiler on PATH.
        subprocess.CalledProcessError: the compilation failed.
    """
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise FileNotFoundError("no C compiler (cc or gcc) on PATH")
    subprocess.run([cc, "-O2", *flags, "-o", binary, source], check=True)
    return binary


def parse_fields(stdout: str) -> dict[str, float]:
    """The ``key=value`` fields a C tool prints."""
    return {k: float(v) for k, v in (kv.split("=") for kv in stdout.split())}


def bench_core(seconds: float, payload: int) -> float:
    """Relay ``handle_datagram`` calls per second of the bare core (best of 3)."""
    config = BeaconConfig(beacon_id=1, relay_packet_limit=_OFF, relay_byte_limit=_OFF)
    core = BeaconCore(config, wall_clock=time.time)
    a, b = ("127.0.0.1", 40001), ("127.0.0.1", 40002)
    core.handle_datagram(encode_message(Discover(1001)), a, 0.0)
    core.handle_datagram(encode_message(Discover(2002)), b, 0.0)
    frame = encode_relay(1001, 2002, b"PILS" + bytes(max(payload - 4, 0)))
    best = 0.0
    for _ in range(3):
        n, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds / 3:
            for _ in range(1000):
                core.handle_datagram(frame, a, 1.0)
            n += 1000
        best = max(best, n / elapsed)
    return best


def free_port(kind: socket.SocketKind = socket.SOCK_DGRAM) -> int:
    """A port of ``kind`` free on 127.0.0.1 just now."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def blast(tool: Path, port: int, seconds: float, payload: int) -> dict[str, float]:
    """Run the flooder against 127.0.0.1:port and parse its ``key=value`` line."""
    result = subprocess.run(
        [tool, "127.0.0.1", str(port), str(seconds), str(payload)],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{tool.name} failed: {result.stderr.strip()}")
    return parse_fields(result.stdout)


def beacon_cmd(listen: str, *flags: str, http: str = "off") -> list[str]:
    """``natroute-beacon`` on ``listen`` with every budget off: the path is measured, not limits."""
    return [
        sys.executable,
        "-m",
        "natroute.beacon.main",
        "--listen",
        listen,
        "--http-listen",
        http,
        "--beacon-id",
        "1",
        "--relay-rate",
        "0",
        "--relay-byte-rate",
        "0",
        "--discover-rate",
        "0",
        *flags,
    ]


def _natroute_cmd(port: int, *flags: str) -> list[str]:
    return beacon_cmd(f"127.0.0.1:{port}", *flags)


def wait_started(proc: subprocess.Popen[str]) -> dict[str, str]:
    """Read the beacon's log up to its ``beacon_started`` record, and return it."""
    assert proc.stderr is not None
    for line in proc.stderr:
        with contextlib.suppress(ValueError):
            record: dict[str, str] = json.loads(line)
            if record.get("event") == "beacon_started":
                return record
    raise RuntimeError("natroute-beacon exited before starting")


def stop(proc: subprocess.Popen[str]) -> None:
    """SIGTERM, then SIGKILL after 10 s."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def relay_run(tools: Tools, config: str, seconds: float, payload: int) -> float:
    """Delivered pps of one flood against one beacon configuration."""
    port = free_port()
    if config == "yardstick":
        proc = subprocess.Popen([tools.beacon, "127.0.0.1", str(port)], text=True)
        time.sleep(0.2)  # let it bind
    else:
        flags = {"natroute": (), "natroute, GSO off": ("--no-udp-gso",)}.get(
            config, ("--no-udp-batch",)
        )
        proc = subprocess.Popen(_natroute_cmd(port, *flags), stderr=subprocess.PIPE, text=True)
        wait_started(proc)
    try:
        return blast(tools.blast, port, seconds, payload)["delivered_pps"]
    finally:
        stop(proc)


def start_latency(cmd: Callable[[int], list[str]], timeout: float = 10.0) -> float:
    """Seconds from starting ``cmd(port)`` to the first DiscoverReply on that port."""
    port = free_port()
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    probe.settimeout(0.002)
    discover = encode_message(Discover(5))
    start = time.perf_counter()
    proc = subprocess.Popen(cmd(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while (elapsed := time.perf_counter() - start) < timeout:
            probe.sendto(discover, ("127.0.0.1", port))
            with contextlib.suppress(TimeoutError, ConnectionRefusedError):
                if probe.recv(100)[:1] == b"\x02":
                    return elapsed
        raise RuntimeError(f"no DiscoverReply within {timeout} s")
    finally:
        probe.close()
        proc.terminate()
        proc.wait()


def main(argv: list[str] | None = None) -> int:
    """Print the relay, start-up, core and stream tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per flood")
    parser.add_argument("--payload", type=int, default=64, help="relay payload bytes")
    parser.add_argument("--runs", type=int, default=3, help="floods per configuration")
    parser.add_argument("--starts", type=int, default=5, help="start-up measurements")
    parser.add_argument(
        "--tools",
        type=Path,
        default=os.environ.get("NATROUTE_BENCH_TOOLS") or None,
        help="directory with cbeacon.c and relayblast.c to use instead of benchmarks/tools",
    )
    parser.add_argument("--no-stream", action="store_true", help="skip the stream rows")
    args = parser.parse_args(argv)

    print(f"cpus={os.cpu_count()} payload={args.payload}B seconds={args.seconds} runs={args.runs}")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            tools = build_tools(args.tools, Path(tmp))
        except (OSError, subprocess.CalledProcessError) as exc:
            print(f"bench_beacon: cannot build the C tools: {exc}", file=sys.stderr)
            return 1
        configs = ["natroute", "natroute, GSO off", "natroute, asyncio transport", "yardstick"]
        results: dict[str, list[float]] = {c: [] for c in configs}
        for _ in range(args.runs):
            for config in configs:  # interleaved: every run sees the same machine
                results[config].append(relay_run(tools, config, args.seconds, args.payload))
        print(f"\n{'relay, flooded by blast':<30}{'delivered pps':>15}{'ratio to C':>12}")
        yardstick = results["yardstick"]
        for config in configs:
            ratios = [n / c for n, c in zip(results[config], yardstick, strict=True)]
            print(
                f"{config:<30}{statistics.median(results[config]):>15,.0f}"
                f"{statistics.median(ratios):>12.2f}"
            )

        compileall.compile_dir(Path(natroute.__file__).parent, quiet=1)
        ours = [start_latency(_natroute_cmd) for _ in range(args.starts)]
        theirs = [
            start_latency(lambda p: [str(tools.beacon), "127.0.0.1", str(p)])
            for _ in range(args.starts)
        ]
        print(f"\n{'start → first discover answered':<30}{'median s':>15}{'max s':>12}")
        print(f"{'natroute-beacon':<30}{statistics.median(ours):>15.3f}{max(ours):>12.3f}")
        print(f"{'yardstick (C)':<30}{statistics.median(theirs):>15.3f}{max(theirs):>12.3f}")

    print(f"\ncore handle_datagram (relay): {bench_core(args.seconds, args.payload):,.0f} calls/s")
    if not args.no_stream:
        print("\nstream relay next to UDP relay (one beacon, Python clients)", flush=True)
        stream = [sys.executable, str(HERE / "bench_stream.py"), "--seconds", str(args.seconds)]
        subprocess.run([*stream, "--payload", str(args.payload)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
