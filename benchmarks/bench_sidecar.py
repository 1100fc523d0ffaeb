"""End-to-end data-plane throughput and start-up latency of natroute sidecars.

Run as ``.venv/bin/python benchmarks/bench_sidecar.py``. It starts the real
console scripts on 127.0.0.1 — ``natroute-registry`` (dev mode, SQLite in a
temporary directory), ``natroute-beacon`` and ``natroute-sidecar`` processes —
and measures:

1. application datagrams per second, app → sidecar → sidecar → app, on the
   direct path and through the beacon (the receiver registered ``relay_only``),
   offered as fast as ``tools/appblast.c`` can for ``--seconds``, next to the
   C yardstick relay (``tools/yardstick.c`` flooded by ``tools/blast.c``) in
   the same run, interleaved; the rows are medians and ratios to it;
2. loss when offering a quarter of the yardstick's rate, paced (half the
   target of 0.5 of the yardstick);
3. time from starting a sidecar process to the first datagram it delivers to
   a peer's application, to a direct peer and to a relay-only peer.

Traffic goes to 127.0.0.1 only; every run is bounded in time. Not a test:
nothing is asserted; ``main()`` prints a table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import bench_beacon  # the C yardstick and its flooder

__all__ = ["main"]

BIN = Path(sys.executable).parent


@dataclass
class Proc:
    """A started service process and what its log said when it became ready."""

    popen: subprocess.Popen[bytes]
    ready: dict[str, object]

    def stop(self) -> None:
        self.popen.terminate()
        try:
            self.popen.wait(5)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


def _start(argv: list[str], event: str, limit: float = 20.0) -> Proc:
    """Start ``argv``; wait for a JSON log line whose event is ``event``."""
    popen = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    assert popen.stderr is not None
    deadline = time.monotonic() + limit
    buf = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([popen.stderr], [], [], 0.2)
        if not ready:
            if popen.poll() is not None:
                break
            continue
        chunk = os.read(popen.stderr.fileno(), 65536)
        if not chunk:
            break
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if record.get("event") == event:
                    # keep draining stderr in the background so the pipe never fills
                    subprocess.Popen(["cat"], stdin=popen.stderr, stdout=subprocess.DEVNULL)
                    return Proc(popen, record)
    popen.kill()
    raise RuntimeError(f"{argv[0]} did not log {event!r}: {buf[-2000:]!r}")


@contextlib.contextmanager
def world(directory: Path) -> Iterator[tuple[str, str]]:
    """A registry and a beacon; yields (registry URL, beacon host:port)."""
    from natroute.registry.testing import registry_process

    beacon_port = bench_beacon.free_port()
    flags = ("--dev", "--db", str(directory / "registry.db"), "--register-rate", "1000")
    with registry_process(directory, *flags) as registry:
        beacon = _start(
            [
                str(BIN / "natroute-beacon"),
                "--listen",
                f"127.0.0.1:{beacon_port}",
                "--http-listen",
                "off",
                "--beacon-id",
                "1",
                "--registry-url",
                registry.url,
                "--registry-token",
                "dev",
                "--relay-rate",
                "0",
                "--relay-byte-rate",
                "0",
            ],
            "beacon_started",
        )
        try:
            yield registry.url, f"127.0.0.1:{beacon_port}"
        finally:
            beacon.stop()


def sidecar(directory: Path, name: str, url: str, beacon: str, *extra: str) -> Proc:
    """A sidecar process; its ``sidecar_ready`` record has node_id and app."""
    return _start(
        [
            str(BIN / "natroute-sidecar"),
            "--listen",
            "127.0.0.1:0",
            "--app-listen",
            "127.0.0.1:0",
            "--http-listen",
            "off",
            "--identity",
            str(directory / name / "identity.json"),
            "--registry-url",
            url,
            "--beacons",
            beacon,
            "--log-level",
            "info",
            *extra,
        ],
        "sidecar_ready",
    )


def _addr(text: object) -> tuple[str, int]:
    host, port = str(text).rsplit(":", 1)
    return host, int(port)


def build_appblast(out: Path) -> Path:
    """Compile ``tools/appblast.c`` (the data-plane flooder and counter) into ``out``."""
    source = Path(__file__).resolve().parent / "tools" / "appblast.c"
    return bench_beacon.compile_c(source, out / "appblast", "-pthread")


def throughput(
    tool: Path, a: Proc, b: Proc, seconds: float, size: int, rate: float
) -> tuple[float, float, float]:
    """(offered/s, delivered/s, loss) for a → b over ``seconds``; ``rate`` 0 floods.

    ``appblast`` (C) offers the datagrams to ``a``'s data plane and counts
    what ``b`` delivers, so neither end of the measurement is Python.
    """
    a_id, b_id = int(str(a.ready["node_id"])), int(str(b.ready["node_id"]))
    app_a = _addr(a.ready["app"])
    warm = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(20):  # warm-up: look up the peer and let the checks settle
        warm.sendto(b_id.to_bytes(4, "big") + bytes(size), app_a)
        time.sleep(0.05)
    warm.close()
    time.sleep(1.0)
    argv = [str(tool), str(app_a[1]), str(_addr(b.ready["app"])[1]), str(a_id), str(b_id)]
    argv += [str(seconds), str(size)] + ([str(int(rate))] if rate else [])
    result = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=True)
    fields = bench_beacon.parse_fields(result.stdout)
    return fields["sent_pps"], fields["delivered_pps"], max(fields["loss"], 0.0)


def time_to_first(directory: Path, url: str, beacon: str, peer: Proc, name: str) -> float:
    """Seconds from starting a new sidecar to its first datagram reaching ``peer``'s app."""
    peer_id = int(str(peer.ready["node_id"]))
    app = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    app.bind(("127.0.0.1", 0))
    app.settimeout(0.01)
    t0 = time.monotonic()
    fresh = sidecar(directory, name, url, beacon)
    fresh_id = int(str(fresh.ready["node_id"]))
    try:
        peer_app = _addr(peer.ready["app"])
        fresh_app = _addr(fresh.ready["app"])
        # the peer's app must be the one the peer sidecar delivers to
        listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        listener.bind(("127.0.0.1", 0))
        listener.settimeout(0.01)
        listener.sendto(fresh_id.to_bytes(4, "big"), peer_app)
        deadline = t0 + 20
        while time.monotonic() < deadline:
            app.sendto(peer_id.to_bytes(4, "big") + b"first", fresh_app)
            try:
                data = listener.recv(65535)
            except TimeoutError:
                continue
            if data[:4] == fresh_id.to_bytes(4, "big"):
                return time.monotonic() - t0
        return float("nan")
    finally:
        fresh.stop()
        app.close()


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds per flood")
    parser.add_argument("--size", type=int, default=64, help="application payload bytes")
    parser.add_argument("--runs", type=int, default=3, help="interleaved runs per row")
    args = parser.parse_args(argv)
    if not (BIN / "natroute-sidecar").exists():
        print("natroute-sidecar not installed in this venv", file=sys.stderr)
        return 1
    directory = Path(tempfile.mkdtemp(prefix="natroute-bench-"))
    rows: list[tuple[str, str]] = []
    try:
        tools = bench_beacon.build_tools(None, directory)
        appblast = build_appblast(directory)
        with world(directory) as (url, beacon):
            a = sidecar(directory, "a", url, beacon)
            b = sidecar(directory, "b", url, beacon)
            r = sidecar(directory, "r", url, beacon, "--relay-only")
            try:
                yard: list[float] = []
                flood: dict[str, list[tuple[float, float, float]]] = {"direct": [], "relay": []}
                for run in range(args.runs):  # interleaved: every run sees the same machine
                    print(f"run {run + 1}/{args.runs}: yardstick, direct, via beacon", flush=True)
                    yard.append(bench_beacon.relay_run(tools, "yardstick", args.seconds, args.size))
                    flood["direct"].append(throughput(appblast, a, b, args.seconds, args.size, 0))
                    flood["relay"].append(throughput(appblast, a, r, args.seconds, args.size, 0))
                rows.append(("C yardstick relay, delivered/s (blast)", f"{_median(yard):,.0f}"))
                for key, label in (("direct", "direct"), ("relay", "via beacon")):
                    got = [g for _, g, _ in flood[key]]
                    ratio = _median([g / y for g, y in zip(got, yard, strict=True)])
                    offered = _median([o for o, _, _ in flood[key]])
                    rows.append(
                        (
                            f"{label}, flooded: delivered/s",
                            f"{_median(got):,.0f} = {ratio:.2f} of the yardstick"
                            f" (offered {offered:,.0f}/s)",
                        )
                    )
                # "no loss at half the target rate": offer a quarter of the yardstick's rate
                half = 0.25 * _median(yard)
                paced = [
                    throughput(appblast, a, b, args.seconds, args.size, half)
                    for _ in range(args.runs)
                ]
                worst = max(loss for _, _, loss in paced)
                rows.append(
                    (
                        "direct, paced at 0.25 of the yardstick",
                        f"offered {_median([o for o, _, _ in paced]):,.0f}/s,"
                        f" delivered {_median([g for _, g, _ in paced]):,.0f}/s,"
                        f" worst loss {worst:.2%}",
                    )
                )
                t_direct = time_to_first(directory, url, beacon, b, "fresh-1")
                rows.append(("start → first datagram, direct peer", f"{t_direct * 1000:,.0f} ms"))
                t_relay = time_to_first(directory, url, beacon, r, "fresh-2")
                rows.append(
                    ("start → first datagram, relay_only peer", f"{t_relay * 1000:,.0f} ms")
                )
            finally:
                for p in (a, b, r):
                    p.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    print(
        f"natroute sidecar benchmark — Python {platform.python_version()},"
        f" {os.cpu_count()} CPUs, payload {args.size} B, {args.seconds:g} s per run,"
        f" medians of {args.runs} interleaved runs"
    )
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
