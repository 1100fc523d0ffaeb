"""A real ``natroute-beacon`` process and UDP nodes to attack it with (loopback only).

:func:`beacon_process` starts the console script in a child process on
127.0.0.1 (UDP and HTTP on port 0), reads the bound addresses from its
``beacon_started`` log line and stops it with SIGTERM. :class:`UdpNode` is a
node's socket on any 127/8 address (Linux routes all of 127/8 to ``lo``), so
one test can play many source addresses. :class:`RelayStream` is a
legitimate pair of signed nodes relaying numbered frames through the beacon
the whole time an attack runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import struct
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from natroute.beacon.auth import sign_discover
from natroute.routing.addr import split_host_port
from natroute.routing.types import Addr
from natroute.routing.wire import Discover, encode_message, encode_relay

__all__ = ["BeaconProcess", "RelayStream", "UdpNode", "beacon_process"]

_SEQ = struct.Struct(">Q")


@dataclass
class BeaconProcess:
    """A running beacon child process."""

    proc: asyncio.subprocess.Process
    udp: Addr
    http: str
    log: list[dict[str, Any]] = field(default_factory=list)

    async def status(self) -> dict[str, Any]:
        """``GET /v1/status``."""
        async with httpx.AsyncClient(base_url=self.http, timeout=10.0) as client:
            response = await client.get("/v1/status")
            response.raise_for_status()
            body: dict[str, Any] = response.json()
            return body

    def rss(self) -> int:
        """Resident set size of the process in bytes (``/proc/PID/status``)."""
        with open(f"/proc/{self.proc.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS line")


@asynccontextmanager
async def beacon_process(*flags: str) -> AsyncIterator[BeaconProcess]:
    """Run ``natroute-beacon`` on 127.0.0.1 with extra ``flags`` for the block."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "natroute.beacon.main",
        "--listen",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
        "--beacon-id",
        "1",
        "--log-level",
        "info",
        *flags,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    drain: asyncio.Task[None] | None = None
    try:
        async with asyncio.timeout(30):
            while True:
                line = await proc.stderr.readline()
                assert line, "beacon exited before starting"
                record = json.loads(line)
                if record.get("event") == "beacon_started":
                    break
        beacon = BeaconProcess(
            proc, split_host_port(record["udp_addr"]), f"http://{record['http_addr']}"
        )

        async def read_log() -> None:
            assert proc.stderr is not None
            while line := await proc.stderr.readline():
                with contextlib.suppress(ValueError):
                    beacon.log.append(json.loads(line))

        drain = asyncio.create_task(read_log())
        yield beacon
        assert proc.returncode is None, "the beacon died during the attack"
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(15):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if drain is not None:
            await drain


class UdpNode:
    """A node's UDP socket on a loopback address, optionally with a signing key."""

    def __init__(self, node_id: int, host: str = "127.0.0.1", *, signed: bool = True) -> None:
        self.node_id = node_id
        self.key = Ed25519PrivateKey.generate() if signed else None
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.setblocking(False)
        self.addr: Addr = self.sock.getsockname()

    def __enter__(self) -> UdpNode:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.sock.close()

    def discover(self, node_id: int | None = None) -> bytes:
        """A Discover for ``node_id`` (default: ours), signed by our key if we have one."""
        node_id = self.node_id if node_id is None else node_id
        key = self.key
        extra = b"" if key is None else sign_discover(key, node_id, int(time.time()))
        return encode_message(Discover(node_id, extra))

    def send(self, data: bytes, dst: Addr) -> None:
        with contextlib.suppress(BlockingIOError):  # a full buffer drops, like the network
            self.sock.sendto(data, dst)

    async def recv(self, wait: float = 2.0) -> bytes | None:
        """The next datagram, or None after ``wait`` seconds."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(wait):
                data, _ = await loop.sock_recvfrom(self.sock, 70_000)
        except TimeoutError:
            return None
        return data

    async def register(self, beacon: Addr) -> bool:
        """Send our Discover; True when a DiscoverReply comes back (within 2 s)."""
        self.send(self.discover(), beacon)
        while (data := await self.recv()) is not None:
            if data[:1] == b"\x02":
                return True
        return False


class RelayStream:
    """Two signed nodes relaying numbered frames through a beacon, a → b, all along.

    ``a`` sends ``rate`` frames a second and both re-register every
    ``keepalive`` seconds; ``delivered`` lists the arrival time of each frame
    ``b`` received, so a test can count deliveries in any window.
    """

    def __init__(self, beacon: Addr, *, rate: float = 200.0, keepalive: float = 0.5) -> None:
        self.beacon = beacon
        self.rate = rate
        self.keepalive = keepalive
        self.a = UdpNode(0xA0A0A0A0)
        self.b = UdpNode(0xB0B0B0B0)
        self.sent = 0
        self.delivered: list[float] = []
        self.keepalive_replies = 0
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> RelayStream:
        assert await self.a.register(self.beacon)
        assert await self.b.register(self.beacon)
        self._tasks = [
            asyncio.create_task(self._send()),
            asyncio.create_task(self._receive()),
            asyncio.create_task(self._keepalive()),
        ]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.a.sock.close()
        self.b.sock.close()

    def delivered_since(self, since: float) -> int:
        """Frames ``b`` received at or after ``since`` (``time.monotonic()``)."""
        return sum(1 for t in self.delivered if t >= since)

    async def _send(self) -> None:
        while True:
            frame = encode_relay(self.a.node_id, self.b.node_id, _SEQ.pack(self.sent))
            self.a.send(frame, self.beacon)
            self.sent += 1
            await asyncio.sleep(1 / self.rate)

    async def _receive(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data, _ = await loop.sock_recvfrom(self.b.sock, 70_000)
            if data[:1] == b"\x06" and data[1:5] == struct.pack(">I", self.a.node_id):
                self.delivered.append(time.monotonic())
            elif data[:1] == b"\x02":
                self.keepalive_replies += 1

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(self.keepalive)
            self.a.send(self.a.discover(), self.beacon)
            self.b.send(self.b.discover(), self.beacon)
