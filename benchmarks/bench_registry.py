"""Registry load figures: 100,000 nodes on SQLite and PostgreSQL, one and two replicas;
and the beacon list next to a bare endpoint on the same server stack (issue 15).

Run as ``.venv/bin/python benchmarks/bench_registry.py`` (load) or with
``--beacons`` (beacon list). Every server is a real ``natroute-registry``
process on 127.0.0.1; every run is bounded in time; nothing is asserted.

**Load.** For each backend and replica count: a fresh database is filled with
``--nodes`` registered nodes (a bulk insert: the measured workload is the
steady state, not the sign-up), then

1. *at the rate real nodes would cause* (open loop, ``--seconds``): heartbeats
   every 30 s per node (100,000 / 30 = 3,333/s), beacon-list reads every 60 s
   (the sidecar's refresh, 1,667/s) and resolves of one active peer every 60 s
   (the sidecar's peer refresh, 1,667/s), spread over the replicas. Latency
   counts from when a request was due, so falling behind shows in p99.
2. *capacity* (closed loop, 64 connections per replica, ``--capacity-seconds``
   per kind): each kind alone as fast as the replicas answer.

Heartbeats are real signed requests (Ed25519, signed once before the runs;
the registries accept them because their ``--signature-skew`` is a day), each
the first of its node in that run. The registry fills its key cache with the
stored nodes' keys when it starts (``KEY_CACHE_SIZE``), so no heartbeat here
reads its key, as in a registry that has run for a while; only a node
registered through another replica since the start would. "achieved" counts
2xx answers that arrived within the run. The CPU time per request (from
``/proc``) of the registries and, on PostgreSQL, of every ``postgres`` process
is printed too, and the load generator's (one Python process on the same
cores): this machine is shared, and CPU per request varies less than
requests per second when other work competes for the cores.

PostgreSQL: ``--postgres-url`` (default ``$NATROUTE_BENCH_POSTGRES_URL``,
then ``$NATROUTE_TEST_POSTGRES_URL``: ``bash .ci/postgres-setup`` starts
one); each run uses a schema of its own, dropped afterwards.

**Beacons** (``--beacons``): one registry worker (uvicorn with uvloop and
httptools, every middleware on) lists four beacons; ``wrk -t2 -c32`` runs
against ``GET /v1/beacons`` and against ``/bench/constant``, a route added to
the same app returning the same bytes, alternately ``--rounds`` times
(``apt-get install -y wrk``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.httpload import Outcome, Stream, percentile, request, run_load

__all__ = ["main"]

HEARTBEAT_INTERVAL: Final = 30.0
BEACON_REFRESH: Final = 60.0
PEER_REFRESH: Final = 60.0
_TICKS: Final = os.sysconf("SC_CLK_TCK")
_NOW: Final = time.time()


# -- servers ------------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _postgres_cpu_seconds() -> float:
    """CPU time of every ``postgres`` process of this machine (server and backends)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # gone meanwhile
        if "(postgres)" in text:
            fields = text.rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / _TICKS
    return total


@contextmanager
def _replicas(directory: Path, count: int, store_flags: Sequence[str]) -> Iterator[list[Any]]:
    from natroute.registry.testing import registry_process

    flags = (
        *store_flags,
        "--dev",
        "--signature-skew",
        "86400",
        "--node-ttl",
        "3600",
        "--log-level",
        "warning",
    )
    with ExitStack() as stack:
        yield [
            stack.enter_context(registry_process(directory, *flags, name=f"r{i}"))
            for i in range(count)
        ]


def _with_schema(url: str, schema: str) -> str:
    parts = urlsplit(url)
    query = f"{parts.query}&search_path={schema}" if parts.query else f"search_path={schema}"
    return urlunsplit(parts._replace(query=query))


# -- the population -----------------------------------------------------------------


@dataclass
class Population:
    """Node IDs, their keys and one signed heartbeat body per node."""

    ids: list[int]
    publics: list[bytes]
    heartbeats: list[bytes]


def _population(count: int, seed: int) -> Population:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from natroute.registry.signing import ACTION_HEARTBEAT, public_key_bytes, sign

    rng = random.Random(seed)
    ids = rng.sample(range(1, 2**32), count)
    publics, heartbeats = [], []
    stamp = int(_NOW * 1e6)
    for i, node_id in enumerate(ids):
        key = Ed25519PrivateKey.generate()
        publics.append(public_key_bytes(key))
        fields = {"endpoint": f"198.51.{i // 250 % 250}.{i % 250 + 1}:4000", "timestamp_us": stamp}
        signature = sign(key, ACTION_HEARTBEAT, fields | {"node_id": node_id})
        heartbeats.append(json.dumps(fields | {"signature": signature}).encode())
    return Population(ids, publics, heartbeats)


def _rows(pop: Population) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    identities = [(n, k, _NOW, 0) for n, k in zip(pop.ids, pop.publics, strict=True)]
    nodes = [
        (n, None, f"203.0.{i // 250 % 250}.{i % 250 + 1}:4000", "[]", 0, None, time.time())
        for i, n in enumerate(pop.ids)
    ]
    return identities, nodes


_NODE_COLUMNS: Final = (
    "node_id",
    "x25519",
    "endpoint",
    "lan_addrs",
    "relay_only",
    "relay_only_forced",
    "last_seen",
)


def _fill_sqlite(path: Path, pop: Population) -> None:
    import sqlite3

    from natroute.registry.sqlite import SqliteStore
    from natroute.registry.store import StoreConfig

    asyncio.run(SqliteStore(path, StoreConfig(), clock=time.time).close())  # create + migrate
    identities, nodes = _rows(pop)
    db = sqlite3.connect(path)
    with db:
        db.executemany("INSERT INTO identities VALUES (?, ?, ?, ?)", identities)
        db.executemany(
            f"INSERT INTO nodes ({', '.join(_NODE_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?, ?)", nodes
        )
        for i in range(1, 5):
            db.execute(
                "INSERT INTO beacons (beacon_id, addr, last_seen) VALUES (?, ?, ?)",
                (i, f"203.0.113.{i}:9001", time.time() + 86400),  # listed for the whole run
            )
    db.close()


async def _fill_postgres(url: str, pop: Population) -> None:
    import asyncpg

    from natroute.registry.postgres import PostgresStore
    from natroute.registry.store import StoreConfig

    await (await PostgresStore.open(url, StoreConfig(), clock=time.time)).close()
    identities, nodes = _rows(pop)
    conn = await asyncpg.connect(url)
    try:
        await conn.copy_records_to_table("identities", records=identities)
        await conn.copy_records_to_table("nodes", records=nodes, columns=list(_NODE_COLUMNS))
        await conn.executemany(
            "INSERT INTO beacons (beacon_id, addr, last_seen) VALUES ($1, $2, $3)",
            [(i, f"203.0.113.{i}:9001", time.time() + 86400) for i in range(1, 5)],
        )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def _admin(url: str, statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@contextmanager
def _database(backend: str, directory: Path, pg_url: str, pop: Population) -> Iterator[list[str]]:
    """A filled database; yields the registry's store flags."""
    if backend == "sqlite":
        path = directory / f"bench-{secrets.token_hex(4)}.db"
        _fill_sqlite(path, pop)
        yield ["--db", str(path)]
        return
    schema = f"bench_{secrets.token_hex(4)}"
    asyncio.run(_admin(pg_url, f"CREATE SCHEMA {schema}"))
    try:
        url = _with_schema(pg_url, schema)
        asyncio.run(_fill_postgres(url, pop))
        yield ["--database-url", url]
    finally:
        asyncio.run(_admin(pg_url, f"DROP SCHEMA {schema} CASCADE"))


# -- load ---------------------------------------------------------------------------


def _generate(
    hosts: list[tuple[str, int]], streams: list[Stream], seconds: float, conns: int, out: Any
) -> None:
    """Child process: run the load on its own core and send the outcomes back."""
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        started = time.process_time()
        outcomes = runner.run(run_load(hosts, streams, seconds, conns))
        cpu = time.process_time() - started
    out.send((outcomes, cpu))


def _load(
    procs: list[Any], streams: list[Stream], seconds: float, conns: int = 64
) -> tuple[list[Outcome], float, float, float]:
    """Run the load in a child process.

    Returns:
        The outcomes, the registries', PostgreSQL's and the load generator's
        CPU seconds (all on the same cores).
    """
    hosts = [("127.0.0.1", int(p.url.rsplit(":", 1)[1])) for p in procs]
    before, pg_before = sum(_cpu_seconds(p.pid) for p in procs), _postgres_cpu_seconds()
    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_generate, args=(hosts, streams, seconds, conns, send))
    child.start()
    outcomes, generator_cpu = receive.recv()
    child.join()
    cpu = sum(_cpu_seconds(p.pid) for p in procs) - before
    return outcomes, cpu, _postgres_cpu_seconds() - pg_before, generator_cpu


@dataclass
class Row:
    """One line of the results table."""

    backend: str
    replicas: int
    phase: str
    kind: str
    target: float | None
    achieved: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_us: float
    pg_cpu_us: float | None
    generator_cpu_us: float

    def text(self) -> str:
        target = "max" if self.target is None else f"{self.target:,.0f}"
        pg = "-" if self.pg_cpu_us is None else f"{self.pg_cpu_us:,.0f}"
        return (
            f"| {self.backend} | {self.replicas} | {self.phase} | {self.kind} | {target} "
            f"| {self.achieved:,.0f} | {self.p50_ms:.1f} | {self.p99_ms:.1f} | {self.errors} "
            f"| {self.cpu_us:,.0f} | {pg} | {self.generator_cpu_us:,.0f} |"
        )


def _rows_of(
    backend: str,
    replicas: int,
    phase: str,
    streams: list[Stream],
    measured: tuple[list[Outcome], float, float, float],
    seconds: float,
) -> list[Row]:
    outcomes, cpu, pg_cpu, generator_cpu = measured
    total_ok = sum(o.ok for o in outcomes) or 1
    rows = []
    for stream, o in zip(streams, outcomes, strict=True):
        rows.append(
            Row(
                backend,
                replicas,
                phase,
                stream.name,
                stream.rate,
                o.ok_in_time / seconds,
                percentile(o.latencies, 0.50) * 1e3,
                percentile(o.latencies, 0.99) * 1e3,
                sum(n for s, n in o.statuses.items() if not 200 <= s < 300) + o.failures,
                cpu / total_ok * 1e6,
                pg_cpu / total_ok * 1e6 if backend == "postgresql" else None,
                generator_cpu / total_ok * 1e6,
            )
        )
    return rows


def _streams(pop: Population, nodes: int, part: slice, scale: float) -> list[Stream]:
    ids = pop.ids[part]
    beats = [
        request("POST", f"/v1/nodes/{n}/heartbeat", body)
        for n, body in zip(ids, pop.heartbeats[part], strict=True)
    ]
    rng = random.Random(5)
    resolves = [request("GET", f"/v1/nodes/{rng.choice(pop.ids)}") for _ in range(20000)]
    beacons = [request("GET", "/v1/beacons")]
    return [
        Stream("heartbeat", beats, nodes / HEARTBEAT_INTERVAL * scale, cycle=False),
        Stream("resolve", resolves, nodes / PEER_REFRESH * scale),
        Stream("beacon list", beacons, nodes / BEACON_REFRESH * scale),
    ]


def load(args: argparse.Namespace) -> int:
    pg_url = args.postgres_url
    backends = args.backends.split(",")
    if "postgresql" in backends and not pg_url:
        print("no PostgreSQL: set --postgres-url (or run bash .ci/postgres-setup)", file=sys.stderr)
        backends.remove("postgresql")
    t0 = time.monotonic()
    print(f"signing {args.nodes:,} heartbeats ...", file=sys.stderr)
    pop = _population(args.nodes, seed=1)
    print(f"  done in {time.monotonic() - t0:.1f} s", file=sys.stderr)
    rows: list[Row] = []
    mixed_part = slice(0, args.nodes // 2)
    capacity_part = slice(args.nodes // 2, args.nodes)
    directory = Path(tempfile.mkdtemp(prefix="natroute-bench-registry-"))
    try:
        for backend in backends:
            for count in (int(x) for x in args.replicas.split(",")):
                label = f"{backend}, {count} replica{'s' if count > 1 else ''}"
                print(f"== {label}: filling {args.nodes:,} nodes", file=sys.stderr)
                with (
                    _database(backend, directory, pg_url, pop) as flags,
                    _replicas(directory, count, flags) as procs,
                ):
                    streams = _streams(pop, args.nodes, mixed_part, 1.0)
                    measured = _load(procs, streams, args.seconds, conns=256)
                    rows += _rows_of(backend, count, "at rate", streams, measured, args.seconds)
                    for stream in _streams(pop, args.nodes, capacity_part, 1.0):
                        stream.rate = None
                        measured = _load(procs, [stream], args.capacity_seconds)
                        rows += _rows_of(
                            backend, count, "capacity", [stream], measured, args.capacity_seconds
                        )
                print(f"   {label} done ({time.monotonic() - t0:.0f} s so far)", file=sys.stderr)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    print(
        "| backend | replicas | phase | kind | target req/s | achieved req/s | p50 ms | p99 ms "
        "| errors | registry CPU µs/req | PostgreSQL CPU µs/req | load generator CPU µs/req |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(row.text())
    print(f"\n{args.nodes:,} nodes; {os.cpu_count()} cores; run took {time.monotonic() - t0:.0f} s")
    return 0


# -- beacons (issue 15) ----------------------------------------------------------------


def _announce(path: Path, port: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(str(port))
    os.replace(tmp, path)


def serve(argv: list[str]) -> int:
    """Child: the registry app plus ``/bench/constant``, served like ``natroute-registry``."""
    import uvicorn
    from fastapi import Response

    from natroute._service.run import bind_tcp, run
    from natroute.registry.app import create_app
    from natroute.registry.backends import open_store
    from natroute.registry.settings import Settings

    db, port_file = argv

    async def main() -> None:
        settings = Settings(dev=True, db=Path(db), http_listen="127.0.0.1:0", log_level="warning")
        store = await open_store(settings, clock=time.time)
        for i in range(1, 5):
            await store.register_beacon(i, f"203.0.113.{i}:9001")
        app = create_app(settings, store=store, close_store=True)
        body = await app.state.services.beacon_list.body(store)

        @app.get("/bench/constant", include_in_schema=False)
        async def constant() -> Response:
            return Response(body, media_type="application/json")

        sock = bind_tcp(settings.http_listen)
        _announce(Path(port_file), int(sock.getsockname()[1]))
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on")
        await uvicorn.Server(config).serve(sockets=[sock])

    run(main())
    return 0


_WRK_RPS: Final = re.compile(r"Requests/sec:\s+([\d.]+)")
_WRK_P99: Final = re.compile(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)


def _wrk(url: str, seconds: float, pid: int) -> tuple[float, float, float]:
    """``(req/s, p99 ms, server CPU µs per request)`` of one ``wrk -t2 -c32`` run."""
    before = _cpu_seconds(pid)
    out = subprocess.run(
        ["wrk", "-t2", "-c32", f"-d{seconds:g}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 30,
    ).stdout
    cpu = _cpu_seconds(pid) - before
    rps = float(_WRK_RPS.search(out).group(1))  # type: ignore[union-attr]
    value, unit = _WRK_P99.search(out).groups()  # type: ignore[union-attr]
    p99 = float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]
    return rps, p99, cpu / (rps * seconds) * 1e6


def beacons(args: argparse.Namespace) -> int:
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2
    directory = Path(tempfile.mkdtemp(prefix="natroute-bench-beacons-"))
    port_file = directory / "port"
    child = subprocess.Popen(
        [sys.executable, __file__, "serve", str(directory / "r.db"), str(port_file)]
    )
    try:
        deadline = time.monotonic() + 20
        while not port_file.exists() or not port_file.read_text():
            if child.poll() is not None or time.monotonic() > deadline:
                print("the registry did not start", file=sys.stderr)
                return 1
            time.sleep(0.05)
        base = f"http://127.0.0.1:{int(port_file.read_text())}"
        results: dict[str, list[tuple[float, float, float]]] = {"beacons": [], "constant": []}
        _wrk(f"{base}/v1/beacons", 1, child.pid)  # warm-up
        for _ in range(args.rounds):
            results["beacons"].append(_wrk(f"{base}/v1/beacons", args.seconds, child.pid))
            results["constant"].append(_wrk(f"{base}/bench/constant", args.seconds, child.pid))
    finally:
        child.terminate()
        child.wait(10)
        shutil.rmtree(directory, ignore_errors=True)
    med = {k: [statistics.median(x[i] for x in v) for i in range(3)] for k, v in results.items()}
    print("| endpoint (one worker, wrk -t2 -c32) | req/s (median) | p99 ms | server CPU µs/req |")
    print("|---|---|---|---|")
    for name, path in (("beacons", "GET /v1/beacons"), ("constant", "GET /bench/constant")):
        rps, p99, cpu = med[name]
        print(f"| {path} | {rps:,.0f} | {p99:.1f} | {cpu:.0f} |")
    ratios = [b[0] / c[0] for b, c in zip(results["beacons"], results["constant"], strict=True)]
    print(
        f"\nbeacon list / bare endpoint: {statistics.median(ratios):.2f} by req/s "
        f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)}), "
        f"{med['constant'][2] / med['beacons'][2]:.2f} by CPU per request; "
        f"{args.rounds} rounds of {args.seconds:g} s; {os.cpu_count()} cores"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:
        return serve(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--beacons", action="store_true", help="the beacon-list row of issue 15")
    parser.add_argument("--nodes", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=10.0, help="per run")
    parser.add_argument("--capacity-seconds", type=float, default=5.0, help="per kind")
    parser.add_argument("--rounds", type=int, default=3, help="--beacons: alternations")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--replicas", default="1,2")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(
            "NATROUTE_BENCH_POSTGRES_URL", os.environ.get("NATROUTE_TEST_POSTGRES_URL", "")
        ),
    )
    args = parser.parse_args(argv)
    return beacons(args) if args.beacons else load(args)


if __name__ == "__main__":
    sys.exit(main())
