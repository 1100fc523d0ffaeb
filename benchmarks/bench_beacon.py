"""Relay throughput of the beacon on loopback, beside the C yardstick.

Run as ``.venv/bin/python benchmarks/bench_beacon.py``. It

1. measures the sans-I/O core alone: ``BeaconCore.handle_datagram`` relay
   calls per second (no sockets);
2. compiles ``cbeacon.c`` and ``relayblast.c`` from the shared tools
   directory (``--tools``, default ``/work/shared/tools``) with ``cc -O2``;
3. runs ``natroute-beacon`` (the real console script: uvloop, asyncio UDP
   shell, strict mode on, relay budgets off) and then ``cbeacon`` on
   127.0.0.1, and drives each with ``relayblast`` (two registered sockets, one
   blasting ``05|A|B|payload`` frames, the other counting ``06`` deliveries)
   for ``--seconds`` at full speed.

Traffic goes to 127.0.0.1 only; every run is bounded in time. Not a test:
nothing asserts; ``main()`` prints a table and returns 0 (1 when a tool is
missing or does not compile).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from natroute.beacon.config import BeaconConfig, RateLimit
from natroute.beacon.core import BeaconCore
from natroute.routing.wire import Discover, encode_message, encode_relay

__all__ = ["bench_core", "blast", "main"]

_OFF = RateLimit(0.0, 0.0)


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


def _compile(tools: Path, out: Path) -> tuple[Path, Path]:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise FileNotFoundError("no C compiler (cc)")
    cbeacon, relayblast = out / "cbeacon", out / "relayblast"
    subprocess.run([cc, "-O2", "-o", cbeacon, tools / "cbeacon.c"], check=True)
    subprocess.run([cc, "-O2", "-pthread", "-o", relayblast, tools / "relayblast.c"], check=True)
    return cbeacon, relayblast


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def blast(relayblast: Path, port: int, seconds: float, payload: int) -> dict[str, float]:
    """Run relayblast against 127.0.0.1:port and parse its ``key=value`` line."""
    result = subprocess.run(
        [relayblast, "127.0.0.1", str(port), str(seconds), str(payload)],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"relayblast failed: {result.stderr.strip()}")
    return {k: float(v) for k, v in (kv.split("=") for kv in result.stdout.split())}


def _start_python_beacon() -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "natroute.beacon.main",
            "--listen",
            "127.0.0.1:0",
            "--http",
            "off",
            "--beacon-id",
            "1",
            "--relay-rate",
            "0",
            "--relay-byte-rate",
            "0",
            "--discover-rate",
            "0",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        record = json.loads(line)
        if record.get("event") == "beacon_started":
            return proc, int(record["udp_addr"].rsplit(":", 1)[1])
    raise RuntimeError("natroute-beacon exited before starting")


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main(argv: list[str] | None = None) -> int:
    """Print core calls/s and loopback relay pps for natroute-beacon and cbeacon."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per blast run")
    parser.add_argument("--payload", type=int, default=64, help="relay payload bytes")
    parser.add_argument("--tools", type=Path, default=Path("/work/shared/tools"))
    args = parser.parse_args(argv)

    print(f"cpus={os.cpu_count()} payload={args.payload}B seconds={args.seconds}")
    print(f"core handle_datagram (relay): {bench_core(args.seconds, args.payload):,.0f} calls/s")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            cbeacon, relayblast = _compile(args.tools, Path(tmp))
        except (OSError, subprocess.CalledProcessError) as exc:
            print(f"cannot build the C tools: {exc}", file=sys.stderr)
            return 1
        proc, port = _start_python_beacon()
        try:
            py = blast(relayblast, port, args.seconds, args.payload)
        finally:
            _stop(proc)
        c_port = _free_udp_port()
        cproc = subprocess.Popen([cbeacon, "127.0.0.1", str(c_port)])
        try:
            time.sleep(0.2)  # let cbeacon bind
            c = blast(relayblast, c_port, args.seconds, args.payload)
        finally:
            cproc.kill()
            cproc.wait()
    print(f"{'beacon':<16}{'sent pps':>12}{'delivered pps':>15}{'loss':>8}")
    for name, row in (("natroute-beacon", py), ("cbeacon (C)", c)):
        print(
            f"{name:<16}{row['sent_pps']:>12,.0f}{row['delivered_pps']:>15,.0f}{row['loss']:>8.1%}"
        )
    print(f"natroute-beacon / cbeacon delivered: {py['delivered_pps'] / c['delivered_pps']:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
