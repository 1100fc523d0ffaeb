"""End-to-end data-plane throughput and start-up latency of natroute sidecars.

Run as ``.venv/bin/python benchmarks/bench_sidecar.py``. It starts the real
console scripts on 127.0.0.1 — ``natroute-registry`` (dev mode, SQLite in a
temporary directory), ``natroute-beacon`` and ``natroute-sidecar`` processes —
and measures:

1. application datagrams per second, app → sidecar → sidecar → app, on the
   direct path and through the beacon (the receiver registered ``relay_only``),
   offered by a sender process as fast as it can for ``--seconds``;
2. time from starting a sidecar process to the first datagram it delivers to
   a peer's application, to a direct peer and to a relay-only peer.

Traffic goes to 127.0.0.1 only; every run is bounded in time. Not a test:
nothing is asserted; ``main()`` prints a table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import platform
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from natroute.beacon.batchio import BatchSocket

__all__ = ["main"]

BIN = Path(sys.executable).parent


def _free_port(kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
    reg_port, beacon_port = _free_port(socket.SOCK_STREAM), _free_port(socket.SOCK_DGRAM)
    registry = _start(
        [
            str(BIN / "natroute-registry"),
            "--dev",
            "--listen",
            f"127.0.0.1:{reg_port}",
            "--db",
            str(directory / "registry.db"),
            "--register-rate",
            "1000",
        ],
        "registry_listening",
    )
    url = f"http://127.0.0.1:{reg_port}"
    beacon = _start(
        [
            str(BIN / "natroute-beacon"),
            "--listen",
            f"127.0.0.1:{beacon_port}",
            "--http",
            "off",
            "--beacon-id",
            "1",
            "--registry",
            url,
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
        yield url, f"127.0.0.1:{beacon_port}"
    finally:
        beacon.stop()
        registry.stop()


def sidecar(directory: Path, name: str, url: str, beacon: str, *extra: str) -> Proc:
    """A sidecar process; its ``sidecar_ready`` record has node_id and app."""
    return _start(
        [
            str(BIN / "natroute-sidecar"),
            "--listen",
            "127.0.0.1:0",
            "--app-listen",
            "127.0.0.1:0",
            "--admin-listen",
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


def _batch(sock: socket.socket) -> BatchSocket:
    batch = BatchSocket.create(sock, gso=False)
    if batch is None:  # pragma: no cover - not Linux
        raise SystemExit("recvmmsg/sendmmsg are needed to offer and count at full speed")
    return batch


def _receiver(sidecar_app: tuple[str, int], src: int, seconds: float, conn: Connection) -> None:
    """Count datagrams delivered from ``src`` (recvmmsg, so counting is never the limit)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.bind(("127.0.0.1", 0))
    sock.sendto(src.to_bytes(4, "big") + b"hello", sidecar_app)  # teaches the sidecar our address
    sock.setblocking(False)
    batch = _batch(sock)
    prefix = src.to_bytes(4, "big")
    conn.send("ready")
    count = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        ready, _, _ = select.select([sock], [], [], 0.2)
        if not ready:
            continue
        n = batch.recv()
        count += sum(1 for data, _ in batch.received(n) if data[:4] == prefix)
    conn.send(count)


def _sender(
    target: tuple[str, int], packet: bytes, seconds: float, rate: float, conn: Connection
) -> None:
    """Offer ``packet`` to the sidecar's data plane (sendmmsg, 64 at a time), paced or flat out."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    batch = _batch(sock)
    burst = [(packet, target)] * 64
    conn.recv()  # go
    sent = 0
    start = time.monotonic()
    end = start + seconds
    while (now := time.monotonic()) < end:
        if rate and sent > (now - start) * rate:
            time.sleep(0.0005)  # paced: wait for the schedule
            continue
        sent += batch.send(burst).sent
    conn.send((sent, time.monotonic() - start))


def throughput(
    a: Proc, b: Proc, seconds: float, size: int, rate: float
) -> tuple[float, float, float]:
    """(offered/s, delivered/s, loss) for a → b over ``seconds``; ``rate`` 0 floods."""
    a_id, b_id = int(str(a.ready["node_id"])), int(str(b.ready["node_id"]))
    ours, theirs = multiprocessing.Pipe()
    rx = multiprocessing.Process(
        target=_receiver, args=(_addr(b.ready["app"]), a_id, seconds + 3, theirs)
    )
    rx.start()
    ours.recv()
    app_a = _addr(a.ready["app"])
    packet = b_id.to_bytes(4, "big") + bytes(size)
    warm = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(20):  # warm-up: look up the peer and let the checks settle
        warm.sendto(packet, app_a)
        time.sleep(0.05)
    warm.close()
    time.sleep(1.0)
    go, tx_end = multiprocessing.Pipe()
    tx = multiprocessing.Process(target=_sender, args=(app_a, packet, seconds, rate, tx_end))
    tx.start()
    go.send("go")
    sent, elapsed = go.recv()
    tx.join()
    count = ours.recv()
    rx.join()
    delivered = max(count - 20, 0)
    return sent / elapsed, delivered / elapsed, 1 - delivered / sent if sent else 0.0


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--size", type=int, default=64, help="application payload bytes")
    parser.add_argument(
        "--rates",
        default="30000,0",
        help="offered datagrams/s per run, comma-separated; 0 floods (default 30000,0)",
    )
    args = parser.parse_args(argv)
    if not (BIN / "natroute-sidecar").exists():
        print("natroute-sidecar not installed in this venv", file=sys.stderr)
        return 1
    directory = Path(tempfile.mkdtemp(prefix="natroute-bench-"))
    rows: list[tuple[str, str]] = []
    try:
        with world(directory) as (url, beacon):
            a = sidecar(directory, "a", url, beacon)
            b = sidecar(directory, "b", url, beacon)
            r = sidecar(directory, "r", url, beacon, "--relay-only", "true")
            try:
                for label, peer in (("direct", b), ("via beacon", r)):
                    for rate in (float(x) for x in args.rates.split(",")):
                        off, got, loss = throughput(a, peer, args.seconds, args.size, rate)
                        offered = f"offered {off:,.0f}/s" + ("" if rate else " (flood)")
                        rows.append(
                            (
                                f"{label}: delivered datagrams/s",
                                f"{got:,.0f} ({offered}, loss {loss:.1%})",
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
        f" {os.cpu_count()} CPUs, payload {args.size} B, {args.seconds:g} s per run"
    )
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
