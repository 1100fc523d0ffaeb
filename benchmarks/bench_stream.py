"""Relay over the stream transport (WebSocket) next to UDP relay, through one beacon.

Run as ``.venv/bin/python benchmarks/bench_stream.py`` (``bench_beacon.py``
runs it too). It starts ``natroute-beacon`` on 127.0.0.1 (relay budgets off,
first keys trusted: no registry) and measures, in the same run:

1. throughput, delivered relay frames per second, for three paths: a UDP
   node to a UDP node, a UDP node to a stream node, and a stream node to a
   UDP node; the sender floods for ``--seconds`` from a child process, the
   receiver counts in this process;
2. latency, round trips through the beacon (node A sends a frame, node B
   answers it, A times it; one frame in flight): a UDP peer versus a stream
   peer, median and 99th percentile.

Traffic goes to 127.0.0.1 only; every run is bounded in time. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from natroute.routing.addr import split_host_port
from natroute.routing.types import Addr
from natroute.routing.wire import Discover, encode_message, encode_relay
from natroute.sidecar.stream import StreamRelayClient

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_beacon import beacon_cmd, stop, wait_started

__all__ = ["Beacon", "StreamRow", "main", "measure"]

_SENDER, _RECEIVER, _PEER = 0x5E4D, 0x4ECE, 0x9EE4


@dataclass(frozen=True)
class Beacon:
    """A running beacon process."""

    proc: subprocess.Popen[str]
    udp: Addr
    stream_url: str


@dataclass(frozen=True)
class StreamRow:
    """One line of the result table."""

    what: str
    value: float
    unit: str
    reference: float | None = None  # the UDP figure of the same run, for the ratio


@asynccontextmanager
async def beacon(*flags: str) -> AsyncIterator[Beacon]:
    """Run ``natroute-beacon`` on loopback with relay budgets off and streams open."""
    proc = subprocess.Popen(  # noqa: ASYNC220 (started once, before any traffic)
        beacon_cmd(
            "127.0.0.1:0",
            "--stream-trust-first-key",
            "--stream-send-queue",
            "4096",
            *flags,
            http="127.0.0.1:0",
        ),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        started = await asyncio.to_thread(wait_started, proc)
        # Keep reading the log so the beacon never blocks on a full pipe.
        threading.Thread(target=proc.stderr.read, daemon=True).start()  # type: ignore[union-attr]
        yield Beacon(proc, split_host_port(started["udp_addr"]), started["stream_url"])
    finally:
        await asyncio.to_thread(stop, proc)


def _udp(node_id: int, beacon: Addr) -> socket.socket:
    """A UDP node socket registered at the beacon."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(1.0)
    for _ in range(10):
        sock.sendto(encode_message(Discover(node_id)), beacon)
        with contextlib.suppress(TimeoutError):
            if sock.recv(100)[:1] == b"\x02":
                sock.setblocking(False)
                return sock
    raise RuntimeError("the beacon does not answer discovers")


def _flood(beacon: Addr, src: int, dst: int, payload: int, seconds: float) -> None:
    """Child process: register ``src`` and send relay frames to ``dst`` for ``seconds``."""
    sock = _udp(src, beacon)
    sock.setblocking(True)
    frame = encode_relay(src, dst, b"P" * payload)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for _ in range(256):
            with contextlib.suppress(OSError):
                sock.sendto(frame, beacon)
    sock.close()


async def _count_udp(sock: socket.socket, seconds: float) -> int:
    loop = asyncio.get_running_loop()
    count, end = 0, loop.time() + seconds
    while loop.time() < end:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.2):
                await loop.sock_recv(sock, 70_000)
                count += 1
        while True:  # drain what is queued without going through the loop
            try:
                sock.recv(70_000)
            except BlockingIOError:
                break
            count += 1
    return count


async def throughput(b: Beacon, seconds: float, payload: int) -> tuple[float, float, float]:
    """Delivered frames/s: UDP → UDP, UDP → stream, stream → UDP."""
    ctx = multiprocessing.get_context("spawn")
    # UDP -> UDP
    receiver = _udp(_RECEIVER, b.udp)
    sender = ctx.Process(target=_flood, args=(b.udp, _SENDER, _RECEIVER, payload, seconds))
    sender.start()
    udp_rate = await _count_udp(receiver, seconds + 0.5) / seconds
    sender.join()
    receiver.close()
    # UDP -> stream
    received = 0

    def on_datagram(_: bytes) -> None:
        nonlocal received
        received += 1

    client = StreamRelayClient(b.stream_url, _PEER, Ed25519PrivateKey.generate(), on_datagram)
    await client.connect()
    sender = ctx.Process(target=_flood, args=(b.udp, _SENDER + 1, _PEER, payload, seconds))
    sender.start()
    await asyncio.sleep(seconds + 0.5)
    sender.join()
    to_stream = received / seconds
    # stream -> UDP
    receiver = _udp(_RECEIVER + 1, b.udp)
    frame = encode_relay(_PEER, _RECEIVER + 1, b"P" * payload)
    counting = asyncio.create_task(_count_udp(receiver, seconds + 0.5))
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not client.send(frame):
            await asyncio.sleep(0)  # the queue is full: let the writer drain it
    from_stream = await counting / seconds
    receiver.close()
    await client.close()
    return udp_rate, to_stream, from_stream


async def latency(b: Beacon, rounds: int) -> tuple[list[float], list[float]]:
    """Round-trip times in ms through the beacon: a UDP peer, then a stream peer."""
    loop = asyncio.get_running_loop()
    a = _udp(_SENDER + 7, b.udp)
    peer = _udp(_RECEIVER + 7, b.udp)

    async def udp_echo() -> None:
        while True:
            data = await loop.sock_recv(peer, 70_000)
            peer.sendto(encode_relay(_RECEIVER + 7, _SENDER + 7, data[5:]), b.udp)

    async def rtts(dst: int) -> list[float]:
        out = []
        for i in range(rounds):
            start = time.perf_counter()
            a.sendto(encode_relay(_SENDER + 7, dst, i.to_bytes(4, "big")), b.udp)
            async with asyncio.timeout(2):
                await loop.sock_recv(a, 70_000)
            out.append((time.perf_counter() - start) * 1000)
        return out

    echo = asyncio.create_task(udp_echo())
    over_udp = await rtts(_RECEIVER + 7)
    echo.cancel()
    holder: list[StreamRelayClient] = []

    def stream_echo(data: bytes) -> None:
        holder[0].send(encode_relay(_PEER + 7, _SENDER + 7, data[5:]))

    client = StreamRelayClient(b.stream_url, _PEER + 7, Ed25519PrivateKey.generate(), stream_echo)
    holder.append(client)
    await client.connect()
    over_stream = await rtts(_PEER + 7)
    await client.close()
    a.close()
    peer.close()
    return over_udp, over_stream


async def measure(seconds: float, payload: int, rounds: int) -> list[StreamRow]:
    """Every stream row, each with the UDP figure of the same run."""
    async with beacon() as b:
        udp_rate, to_stream, from_stream = await throughput(b, seconds, payload)
        over_udp, over_stream = await latency(b, rounds)
    p99 = max(1, rounds * 99 // 100) - 1
    udp_sorted, stream_sorted = sorted(over_udp), sorted(over_stream)
    return [
        StreamRow("relay UDP → UDP (Python sender)", udp_rate, "frames/s"),
        StreamRow("relay UDP → stream", to_stream, "frames/s", udp_rate),
        StreamRow("relay stream → UDP", from_stream, "frames/s", udp_rate),
        StreamRow("round trip via beacon, UDP peer, median", statistics.median(over_udp), "ms"),
        StreamRow(
            "round trip via beacon, stream peer, median",
            statistics.median(over_stream),
            "ms",
            statistics.median(over_udp),
        ),
        StreamRow("round trip, UDP peer, p99", udp_sorted[p99], "ms"),
        StreamRow("round trip, stream peer, p99", stream_sorted[p99], "ms", udp_sorted[p99]),
    ]


def print_rows(rows: list[StreamRow]) -> None:
    """The table: value, and the ratio to the UDP figure of the same run."""
    for row in rows:
        ratio = f"{row.value / row.reference:6.2f} x UDP" if row.reference else ""
        print(f"{row.what:<46}{row.value:>12,.2f} {row.unit:<9}{ratio}")


def main(argv: list[str] | None = None) -> int:
    """Print the stream-versus-UDP table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per flood")
    parser.add_argument("--payload", type=int, default=64, help="relay payload bytes")
    parser.add_argument("--rounds", type=int, default=1000, help="round trips per latency row")
    args = parser.parse_args(argv)
    print_rows(asyncio.run(measure(args.seconds, args.payload, args.rounds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
