"""A small HTTP/1.1 load generator for the benchmarks: raw asyncio, keep-alive.

httpx costs more CPU per request than the registry spends answering it, so
the benchmarks drive servers with pre-encoded requests over plain asyncio
connections instead. Two ways to offer load:

* **open loop** (``rate`` set): requests are due at ``start + i / rate``
  whatever happens; a request waits for a free connection when all are busy,
  and its latency is counted from the moment it was due, so a server that
  falls behind shows it in the percentiles (no coordinated omission);
* **closed loop** (``rate`` None): ``connections`` clients per target send
  the next request as soon as the previous answer arrived (like ``wrk``).

Requests are spread round-robin over the targets (several replicas). Only
responses are parsed (status line and ``Content-Length``); each stream's
requests are consumed in order, once (``cycle`` False) or round and round.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, cast

__all__ = ["Outcome", "Stream", "percentile", "request", "run_load"]

_HEADER_END: Final = b"\r\n\r\n"


def request(method: str, path: str, body: bytes = b"", host: str = "registry") -> bytes:
    """One pre-encoded HTTP/1.1 request (keep-alive)."""
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n"
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


@dataclass
class Stream:
    """A kind of request: its pre-encoded requests and how fast to offer them."""

    name: str
    requests: Sequence[bytes]
    rate: float | None = None
    cycle: bool = True


@dataclass
class Outcome:
    """What one stream achieved."""

    name: str
    due: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    failures: int = 0
    latencies: list[float] = field(default_factory=list)
    #: 2xx answers that arrived before the time ran out (the throughput figure).
    ok_in_time: int = 0

    @property
    def ok(self) -> int:
        """Answers with a 2xx status (late ones included)."""
        return sum(n for status, n in self.statuses.items() if 200 <= status < 300)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` (nearest rank); NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


class _Client(asyncio.Protocol):
    """One keep-alive connection answering one request at a time."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._waiter: asyncio.Future[int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self._buf += data
        end = self._buf.find(_HEADER_END)
        if end < 0 or self._waiter is None:
            return
        head = bytes(self._buf[:end]).lower()
        length = 0
        at = head.find(b"\r\ncontent-length:")
        if at >= 0:
            length = int(head[at + 17 : head.find(b"\r\n", at + 2)].strip() or b"0")
        total = end + 4 + length
        if len(self._buf) < total:
            return
        status = int(self._buf[9:12])
        del self._buf[:total]
        waiter, self._waiter = self._waiter, None
        if not waiter.done():
            waiter.set_result(status)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError("connection closed"))
        self._transport = None

    async def call(self, raw: bytes) -> int:
        if self._transport is None:
            raise ConnectionError("not connected")
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(raw)
        return await self._waiter

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def _connect(host: str, port: int) -> _Client:
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(_Client, host, port)
    return client


async def _call(
    pools: list[asyncio.Queue[_Client]], target: int, raw: bytes, hosts: Sequence[tuple[str, int]]
) -> int:
    """Send ``raw`` on a free connection of ``target``; reconnect a broken one."""
    client = await pools[target].get()
    try:
        return await client.call(raw)
    except ConnectionError:
        client.close()
        client = await _connect(*hosts[target])
        raise
    finally:
        pools[target].put_nowait(client)


async def run_load(
    hosts: Sequence[tuple[str, int]],
    streams: Sequence[Stream],
    seconds: float,
    connections: int = 64,
) -> list[Outcome]:
    """Offer ``streams`` to ``hosts`` for ``seconds``; returns one outcome per stream.

    ``connections`` is per target and shared by every stream.
    """
    pools: list[asyncio.Queue[_Client]] = []
    for host in hosts:
        pool: asyncio.Queue[_Client] = asyncio.Queue()
        for client in await asyncio.gather(*(_connect(*host) for _ in range(connections))):
            pool.put_nowait(client)
        pools.append(pool)
    start = time.perf_counter()
    stop_at = start + seconds
    outcomes = [Outcome(s.name) for s in streams]
    tasks: set[asyncio.Task[None]] = set()

    async def one(outcome: Outcome, raw: bytes, target: int, due: float) -> None:
        try:
            status = await _call(pools, target, raw, hosts)
        except (ConnectionError, OSError):
            outcome.failures += 1
            return
        done = time.perf_counter()
        outcome.statuses[status] += 1
        outcome.latencies.append(done - due)
        if 200 <= status < 300 and done <= stop_at:
            outcome.ok_in_time += 1

    async def open_loop(stream: Stream, outcome: Outcome) -> None:
        assert stream.rate is not None
        i = 0
        while True:
            due = start + i / stream.rate
            if due >= stop_at or (not stream.cycle and i >= len(stream.requests)):
                return
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            raw = stream.requests[i % len(stream.requests)]
            task = asyncio.create_task(one(outcome, raw, i % len(hosts), due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            outcome.due += 1
            i += 1

    async def closed_loop(stream: Stream, outcome: Outcome, worker: int, workers: int) -> None:
        i = worker
        while time.perf_counter() < stop_at:
            if not stream.cycle and i >= len(stream.requests):
                return
            raw = stream.requests[i % len(stream.requests)]
            outcome.due += 1
            await one(outcome, raw, i % len(hosts), time.perf_counter())
            i += workers

    runners = []
    for stream, outcome in zip(streams, outcomes, strict=True):
        if stream.rate is not None:
            runners.append(open_loop(stream, outcome))
        else:
            workers = connections * len(hosts)
            runners += [closed_loop(stream, outcome, w, workers) for w in range(workers)]
    await asyncio.gather(*runners)
    if tasks:  # answers still owed when the time ran out: wait a little for them
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)
    for pool in pools:
        while not pool.empty():
            pool.get_nowait().close()
    return outcomes
