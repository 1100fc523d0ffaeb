"""The beacon refresh on the event loop (``natroute.sidecar.refresh``).

Real UDP and HTTP on 127.0.0.1 port 0. Beacons are listed as
``localhost:<port>`` (a name survives the filter that drops loopback
literals, and is looked up with ``loop.getaddrinfo``). RTTs come from a
:class:`FakeClock` that the fake beacons move when they answer, so no
assertion depends on how fast the machine is.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

import pytest

from natroute.registry.client import AsyncRegistryClient
from natroute.routing import (
    BeaconSelectionState,
    DiscoveryError,
    ListSource,
    Manager,
    PickReason,
    RefreshTick,
    ResolveError,
    load_beacon_cache_entry,
    pick_beacon,
)
from natroute.routing.types import Addr
from natroute.routing.wire import Discover, DiscoverReply, decode_message, encode_message
from natroute.sidecar.beacons import BeaconHealth, QuarantineLister
from natroute.sidecar.refresh import (
    AsyncRttProber,
    probe_rtt,
    probe_rtts,
    resolve_beacon,
    run_refresh_tick,
)

from .fakenet import FakeClock

KEY = b"identity-key-stable-bytes-1234"
NOW = datetime(2026, 11, 26, 3, 0, 0, tzinfo=UTC)
OUR_ID = 0x00C0FFEE

Answer = Callable[[bytes, Addr], Awaitable[bytes | None]]


class FakeBeacon(asyncio.DatagramProtocol):
    """Records every datagram and answers each through ``answer`` (in a task)."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.received: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.received.append(data)
        task = asyncio.get_running_loop().create_task(self._reply(data, (addr[0], addr[1])))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _reply(self, data: bytes, src: Addr) -> None:
        out = await self.answer(data, src)
        if out is not None and self.transport is not None:
            self.transport.sendto(out, src)


def replying(clock: FakeClock | None = None, *, rtt: float = 0.0) -> Answer:
    """Answer a Discover with a DiscoverReply, moving ``clock`` by ``rtt`` first."""

    async def answer(data: bytes, src: Addr) -> bytes | None:
        if not isinstance(decode_message(data), Discover):
            return None
        if clock is not None:
            clock.advance(rtt)
        return encode_message(DiscoverReply(src))

    return answer


async def silent(data: bytes, src: Addr) -> bytes | None:
    return None


@asynccontextmanager
async def fake_beacon(answer: Answer) -> AsyncIterator[tuple[FakeBeacon, str]]:
    """A beacon on 127.0.0.1:0; yields it and its ``localhost:port`` name."""
    loop = asyncio.get_running_loop()
    transport, beacon = await loop.create_datagram_endpoint(
        lambda: FakeBeacon(answer), local_addr=("127.0.0.1", 0)
    )
    try:
        yield beacon, f"localhost:{transport.get_extra_info('sockname')[1]}"
    finally:
        transport.close()
        for task in list(beacon.tasks):
            task.cancel()


def closed_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port: int = s.getsockname()[1]
    s.close()
    return port


# -- names --------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.timeout(10)
async def test_resolve_beacon_follows_the_routing_rules() -> None:
    assert await resolve_beacon("127.0.0.1:9001") == ("127.0.0.1", 9001)
    assert await resolve_beacon("[::ffff:127.0.0.1]:9") == ("127.0.0.1", 9)
    assert await resolve_beacon("localhost:9001") == ("127.0.0.1", 9001)  # IPv4 first
    assert await resolve_beacon("[::1]:9001", socket.AF_INET6) == ("::1", 9001)
    for bad, message in [
        ("", "empty address"),
        ("127.0.0.1", "missing port"),
        ("a" * 64 + ".example:9001", "resolve beacon"),  # IDNA refuses it: no DNS query
    ]:
        with pytest.raises(ResolveError, match=message):
            await resolve_beacon(bad)
    with pytest.raises(ResolveError):
        await resolve_beacon("[::1]:9001", socket.AF_INET)


# -- RTT probes ----------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.timeout(10)
async def test_probe_rtt_times_one_discover() -> None:
    clock = FakeClock()
    async with fake_beacon(replying(clock, rtt=0.25)) as (beacon, name):
        assert await probe_rtt(name, reply_timeout=5, clock=clock) == 0.25
    assert [decode_message(d) for d in beacon.received] == [Discover(0)]


@pytest.mark.asyncio
@pytest.mark.timeout(10)
async def test_probe_rtt_failures() -> None:
    clock = FakeClock()

    async def garbage(data: bytes, src: Addr) -> bytes:
        return b"\x02\x05short"

    async with fake_beacon(garbage) as (_, name):
        with pytest.raises(DiscoveryError, match="invalid discover reply"):
            await probe_rtt(name, reply_timeout=5, clock=clock)
    with pytest.raises(DiscoveryError, match="discover reply: "):  # ICMP: nobody listens
        await probe_rtt(f"127.0.0.1:{closed_port()}", reply_timeout=5, clock=clock)
    async with fake_beacon(silent) as (_, name):
        with pytest.raises(DiscoveryError, match="timed out"):
            await probe_rtt(name, reply_timeout=0.2, clock=clock)
    with pytest.raises(ResolveError):
        await probe_rtt("no-port", reply_timeout=5, clock=clock)


@pytest.mark.asyncio
@pytest.mark.timeout(10)
async def test_probe_rtts_keeps_those_that_answered() -> None:
    clock = FakeClock()
    async with (
        fake_beacon(replying(clock, rtt=0.5)) as (_, answers),
        fake_beacon(silent) as (_, quiet),
    ):
        gone = f"localhost:{closed_port()}"
        rtts = await probe_rtts([answers, quiet, gone], reply_timeout=0.3, clock=clock)
    assert list(rtts) == [answers]
    assert rtts[answers] >= 0.5


# -- the tick ------------------------------------------------------------------------


class Registry:
    """The registry's beacon list, awaited (an ``AsyncBeaconSource``)."""

    def __init__(self, *addrs: str) -> None:
        self.addrs = list(addrs)
        self.error: Exception | None = None

    async def __call__(self) -> list[str]:
        if self.error is not None:
            raise self.error
        return list(self.addrs)


class Node:
    """What the sidecar holds for a tick: selection state, a Manager on a real socket."""

    def __init__(self, tmp_path: Path, bootstrap: list[str] | None = None) -> None:
        self.state = BeaconSelectionState(bootstrap or [])
        self.manager = Manager(FakeClock())
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.manager.set_socket(self.sock)
        self.manager.set_local_node_id_fn(lambda: OUR_ID)
        self.identity = str(tmp_path / "identity.json")
        self.clock = FakeClock()
        self.prober: AsyncRttProber = self.probe

    async def probe(self, addrs: list[str]) -> dict[str, float]:
        return await probe_rtts(addrs, reply_timeout=5, clock=self.clock)

    async def tick(self, source: Any, *, first_tick: bool = False, probe: bool = False) -> Any:
        tick = RefreshTick(self.state, KEY, first_tick=first_tick, probe=probe)
        return await run_refresh_tick(
            tick, self.manager, source, self.prober, self.identity, lambda: NOW
        )


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path)
    try:
        yield n
    finally:
        n.sock.close()


async def until_received(beacon: FakeBeacon, count: int) -> None:
    async with asyncio.timeout(5):
        while len(beacon.received) < count:  # noqa: ASYNC110 - a datagram in flight on loopback
            await asyncio.sleep(0.01)


@pytest.mark.asyncio
@pytest.mark.timeout(20)
async def test_a_tick_swaps_registers_and_saves(node: Node) -> None:
    async with fake_beacon(replying()) as (beacon, name):
        registry = Registry(name, "10.0.0.1:9001")
        out = await node.tick(registry, first_tick=True)
        assert (out.source, out.discovered, out.swapped, out.registered, out.errors) == (
            ListSource.REGISTRY,
            [name],
            True,
            True,
            (),
        )
        port = int(name.rsplit(":", 1)[1])
        assert node.manager.beacon_addr() == ("127.0.0.1", port)
        assert node.state.get_current_pick() == name
        await until_received(beacon, 1)
        assert decode_message(beacon.received[0]) == Discover(OUR_ID)
        entry = load_beacon_cache_entry(node.identity)
        assert entry is not None
        assert (entry.addrs, entry.saved_at) == ([name], NOW)
        # the same list again: nothing to swap, nothing sent
        again = await node.tick(registry)
        assert (again.swapped, again.registered) == (False, False)
        # the registry fails on a later tick: the pick stays
        registry.error = ConnectionRefusedError("refused")
        failed = await node.tick(registry)
        assert failed.source is ListSource.NONE
        assert failed.errors == ("beacon list: refused",)
        assert node.state.get_current_pick() == name


@pytest.mark.asyncio
@pytest.mark.timeout(20)
async def test_the_first_tick_falls_back_to_the_cache(node: Node) -> None:
    async with fake_beacon(replying()) as (_, name):
        await node.tick(Registry(name), first_tick=True)
        before = Path(node.identity).with_name("beacons.json").read_bytes()
        cold = Node(Path(node.identity).parent)
        try:
            registry = Registry()
            registry.error = ConnectionRefusedError("down")
            out = await cold.tick(registry, first_tick=True)
        finally:
            cold.sock.close()
        assert (out.source, out.swapped) == (ListSource.CACHE, True)
        assert cold.state.get_current_pick() == name
        assert Path(node.identity).with_name("beacons.json").read_bytes() == before  # D23


@pytest.mark.asyncio
@pytest.mark.timeout(20)
async def test_an_unresolvable_pick_changes_nothing(node: Node) -> None:
    out = await node.tick(Registry("a" * 64 + ".example:9001"), first_tick=True)
    assert out.swapped is False
    assert out.errors[0].startswith("resolve beacon")
    assert node.manager.beacon_addr() is None
    assert node.state.snapshot() == ([], [], "")
    assert load_beacon_cache_entry(node.identity) is None


@pytest.mark.asyncio
@pytest.mark.timeout(20)
async def test_rtt_probes_override_a_slow_hash_pick(node: Node) -> None:
    async with fake_beacon(silent) as (one, name_one), fake_beacon(silent) as (two, name_two):
        names = sorted([name_one, name_two])
        slow_name = pick_beacon(names, KEY)  # the hash pick is made the slow one
        fast_name = next(n for n in names if n != slow_name)
        by_name = {name_one: one, name_two: two}
        by_name[slow_name].answer = replying(node.clock, rtt=1.0)
        by_name[fast_name].answer = replying(node.clock, rtt=0.001)

        async def one_at_a_time(addrs: list[str]) -> dict[str, float]:
            # probed one after the other, each RTT is exactly its beacon's clock step
            return {a: await probe_rtt(a, reply_timeout=5, clock=node.clock) for a in addrs}

        node.prober = one_at_a_time
        out = await node.tick(Registry(*names), first_tick=True, probe=True)
    assert out.reason is PickReason.RTT_OVERRIDE
    assert node.state.get_current_pick() == fast_name
    assert out.rtt == {fast_name: pytest.approx(0.001), slow_name: pytest.approx(1.0)}


# -- the loop keeps running ----------------------------------------------------------


class GatedRegistry(ThreadingHTTPServer):
    """``GET /v1/beacons`` on 127.0.0.1:0, from its own thread, answered only once
    ``gate`` is set: whoever waits for the answer waits for whoever sets it."""

    def __init__(self, addrs: list[str]) -> None:
        self.addrs = addrs
        self.gate = threading.Event()
        self.requests = 0
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: GatedRegistry

    def do_GET(self) -> None:
        self.server.requests += 1
        answered = self.server.gate.wait(10)
        body = json.dumps(
            {"beacons": [{"id": i, "addr": a} for i, a in enumerate(self.server.addrs, 1)]}
        ).encode()
        self.send_response(200 if answered and self.path == "/v1/beacons" else 503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def gated_registry(addrs: list[str]) -> Iterator[GatedRegistry]:
    server = GatedRegistry(addrs)
    thread = threading.Thread(target=server.serve_forever, name="gated-registry", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.gate.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.mark.asyncio
@pytest.mark.timeout(30)
async def test_a_tick_never_blocks_the_loop(node: Node) -> None:
    """The registry answers, and the beacons reply to the probes, only after a
    timer on the loop has ticked while the refresh waited for them: a refresh
    that blocked the loop would get neither (the registry gives up with a 503,
    the probes time out) and the assertions below would fail."""
    ticks = 0
    during_probes = asyncio.Event()

    async def after_ticks(data: bytes, src: Addr) -> bytes | None:
        start = ticks
        while ticks < start + 3:  # noqa: ASYNC110 - counting the loop's own timer
            await asyncio.sleep(0.01)
        during_probes.set()
        return await replying(node.clock, rtt=0.01)(data, src)

    async with (
        fake_beacon(after_ticks) as (_, one),
        fake_beacon(after_ticks) as (_, two),
    ):
        with gated_registry([one, two]) as registry:
            loop = asyncio.get_running_loop()

            def timer() -> None:
                nonlocal ticks
                ticks += 1
                if ticks == 5:
                    registry.gate.set()  # from the loop: the loop ran while the call waited
                handle[0] = loop.call_later(0.01, timer)

            handle = [loop.call_later(0.01, timer)]
            health = BeaconHealth(node.clock, dead_after=30, release_after=60)
            try:
                async with AsyncRegistryClient(registry.url, timeout=8) as client:
                    source = QuarantineLister(client, health)
                    out = await node.tick(source, first_tick=True, probe=True)
            finally:
                handle[0].cancel()
    assert registry.requests == 1
    assert out.source is ListSource.REGISTRY
    assert out.errors == ()
    assert sorted(out.rtt) == sorted([one, two])  # every probe was answered
    assert during_probes.is_set()
    assert ticks >= 5 + 3
    assert out.swapped
