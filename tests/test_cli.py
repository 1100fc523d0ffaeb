"""The ``natroute`` command: the beacon-pick demo, and status/mutations against a real admin API."""

from __future__ import annotations

import asyncio
import io
import json
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from natroute._service.run import EmbeddedHttpServer
from natroute.cli import main
from natroute.routing.selection import pick_beacon
from natroute.sidecar.admin import create_app
from natroute.sidecar.identity import load_or_create_identity
from natroute.sidecar.service import Sidecar
from natroute.sidecar.settings import Settings
from natroute.sidecar.status import CacheAge, build_status
from natroute.sidecar.testing import running_sidecar, running_stack
from tests.sidecar.helpers import Pump, node_id, wait_for

TOKEN = "cli-token-" + "x" * 10


@dataclass
class Result:
    code: int
    out: str
    err: str


def run(argv: Sequence[str]) -> Result:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return Result(code, out.getvalue(), err.getvalue())


async def arun(*argv: str) -> Result:
    """Run the (blocking) CLI in a worker thread while the loop serves the admin API."""
    return await asyncio.to_thread(run, argv)


# -- pick-beacon: the FNV-1a vectors and the RTT override ----------------------


@pytest.mark.parametrize(
    ("key_hex", "size", "index", "fnv"),
    [
        ("61", 2, 0, "0xE40C292C"),  # b"a"
        ("61", 3, 1, "0xE40C292C"),
        ("6b", 4, 2, "0xEE0C38EA"),  # b"k"
        ("616e79", 2, 1, "0x2C29F04D"),  # b"any"
        ("00" * 32, 3, 2, "0x0B2AE445"),
    ],
)
def test_pick_beacon_follows_the_spec_vectors(
    key_hex: str, size: int, index: int, fnv: str
) -> None:
    beacons = [f"b{i}.example:{7000 + i}" for i in range(size)]
    result = run(["pick-beacon", "--beacons", ",".join(beacons), "--key-hex", key_hex, "--json"])
    assert result.code == 0, result.err
    body = json.loads(result.out)
    assert body["key_fnv1a32"] == fnv
    assert body["hash_index"] == index
    assert body["hash_pick"] == beacons[index]
    assert "rtt_pick" not in body


def test_pick_beacon_human_output_for_key_a() -> None:
    result = run(["pick-beacon", "--beacons", "x:1,y:2", "--key-hex", "61"])
    assert result.code == 0
    lines = [line.rstrip() for line in result.out.splitlines()]
    assert lines == [
        "key fnv1a32  0xE40C292C",
        "beacons      x:1, y:2 (2)",
        "hash pick    x:1 (index 0 = 0xE40C292C mod 2)",
    ]


def test_pick_beacon_rtt_override() -> None:
    demo = ["pick-beacon", "--beacons", "x:1,y:2", "--key-hex", "61"]
    slow = run([*demo, "--rtt", "x:1=30", "--rtt", "y:2=10", "--json"])
    body = json.loads(slow.out)
    assert (body["hash_pick"], body["rtt_pick"], body["reason"]) == ("x:1", "y:2", "rtt_override")
    assert body["rtt_ms"] == {"x:1": 30.0, "y:2": 10.0}
    close = run([*demo, "--rtt", "x:1=20", "--rtt", "y:2=10", "--json"])
    assert json.loads(close.out)["reason"] == "hash"  # 20 ms is not > 2 x 10 ms
    silent = run([*demo, "--rtt", "y:2=10"])
    assert "rtt pick     y:2 (rtt_override: hash pick did not answer" in silent.out


def test_pick_beacon_from_an_identity_file(tmp_path: Path) -> None:
    path = tmp_path / "identity.json"
    identity = load_or_create_identity(str(path))
    beacons = [f"b{i}.example:7000" for i in range(5)]
    result = run(["pick-beacon", "--beacons", ",".join(beacons), "--key-file", str(path), "--json"])
    assert result.code == 0
    assert json.loads(result.out)["hash_pick"] == pick_beacon(beacons, identity.ed25519_public)
    missing = run(["pick-beacon", "--beacons", "x:1", "--key-file", str(tmp_path / "nope.json")])
    assert missing.code == 1
    assert "no identity file" in missing.err
    assert not (tmp_path / "nope.json").exists()  # the CLI never creates keys
    (tmp_path / "bad.json").write_text("{}")
    bad = run(["pick-beacon", "--beacons", "x:1", "--key-file", str(tmp_path / "bad.json")])
    assert bad.code == 1
    assert "invalid identity file" in bad.err


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["pick-beacon", "--beacons", "x:1"],
        ["pick-beacon", "--beacons", "x:1", "--key-hex", "61", "--key-file", "f"],
        ["pick-beacon", "--beacons", "x:1", "--key-hex", "zz"],
        ["pick-beacon", "--beacons", "", "--key-hex", "61"],
        ["pick-beacon", "--beacons", "x:1", "--key-hex", "61", "--rtt", "x:1"],
        ["pick-beacon", "--beacons", "x:1", "--key-hex", "61", "--rtt", "x:1=-4"],
        ["relay", "5", "maybe"],
        ["status", "--admin-url", "ftp://127.0.0.1:1"],
    ],
)
def test_usage_errors_exit_2(argv: list[str]) -> None:
    result = run(argv)
    assert result.code == 2
    assert result.err
    assert result.out == ""


def test_unreachable_admin_api_is_explained() -> None:
    with socket.socket() as sock:  # bound, never listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        result = run(["status", "--admin-url", url])
    assert result.code == 1
    assert f"is the sidecar running? admin API at {url} not reachable" in result.err


def test_admin_api_that_never_answers() -> None:
    with socket.socket() as sock:  # listening, never accepting: the request times out
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        result = run(["status", "--admin-url", url, "--timeout", "0.3"])
    assert result.code == 1
    assert f"admin API at {url} did not answer in time" in result.err


def _answering(status: int, body: bytes) -> httpx.MockTransport:
    return httpx.MockTransport(lambda request: httpx.Response(status, content=body))


def test_answers_that_are_not_the_admin_api() -> None:
    err = io.StringIO()
    code = main(
        ["status"],
        stdout=io.StringIO(),
        stderr=err,
        transport=_answering(502, b"<html>bad gateway</html>"),
    )
    assert code == 1
    assert "HTTP 502 from GET /v1/status?peers=true" in err.getvalue()

    def broken(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("server hung up", request=request)

    err = io.StringIO()
    code = main(
        ["refresh", "--admin-token", "t"],
        stdout=io.StringIO(),
        stderr=err,
        transport=httpx.MockTransport(broken),
    )
    assert code == 1
    assert "server hung up" in err.getvalue()


def _serving_json(body: object) -> httpx.MockTransport:
    return httpx.MockTransport(lambda request: httpx.Response(200, json=body))


@pytest.mark.asyncio
async def test_status_of_a_starting_sidecar_with_errors_renders_text_verbatim(
    tmp_path: Path,
) -> None:
    fields: dict[str, Any] = {
        "registry_url": "http://127.0.0.1:9",
        "identity": str(tmp_path / "identity.json"),
        "beacons": "[::1]:7000",
        "http_listen": "off",
    }
    sidecar = Sidecar(Settings(**fields))
    try:
        status = asdict(build_status(sidecar, cache=CacheAge(error="parse beacon cache: [x]")))
    finally:
        await sidecar.stop()
    status["beacon"]["last_refresh_errors"] = ["beacon_list send: [Errno 111] [bold]refused"]
    out, err = io.StringIO(), io.StringIO()
    code = main(["status"], stdout=out, stderr=err, transport=_serving_json(status))
    assert code == 0, err.getvalue()
    text = out.getvalue()
    assert "natroute sidecar node - (starting)" in text
    assert "never" in text  # no refresh, no beacon reply yet
    assert "errors: beacon_list send: [Errno 111] [bold]refused" in text
    assert "none (parse beacon cache: [x])" in text
    assert "1 bootstrap + 0 discovered from none" in text
    assert "peers (0)" in text

    result = {
        "source": "cache",
        "reason": "rtt_override",
        "pick": "[::1]:7000",
        "swapped": True,
        "registered": True,
        "beacons": ["[::1]:7000", "b.example:7000"],
        "discovered": ["[::1]:7000"],
        "rtt_ms": {"[::1]:7000": 0.25},
        "errors": ["beacon_list send: [red]down"],
    }
    out = io.StringIO()
    code = main(["refresh", "--admin-token", "t"], stdout=out, transport=_serving_json(result))
    assert code == 0
    lines = [line.rstrip() for line in out.getvalue().splitlines()]
    assert lines == [
        "source   cache",
        "pick     [::1]:7000 (rtt_override, swapped)",
        "beacons  [::1]:7000, b.example:7000",
        "RTT      [::1]:7000 0.2ms",
        "error    beacon_list send: [red]down",
    ]


# -- against a real sidecar's admin API -----------------------------------------


@asynccontextmanager
async def served(tmp_path: Path) -> AsyncIterator[tuple[Sidecar, Sidecar, str]]:
    """Two sidecars that exchanged a datagram; ``a``'s admin API on 127.0.0.1:0."""
    async with (
        running_stack(tmp_path) as stack,
        running_sidecar(stack.sidecar_settings("a", admin_token=TOKEN)) as a,
        running_sidecar(stack.sidecar_settings("b")) as b,
    ):
        async with Pump(a, b) as pump:
            await pump.delivered(1, 5.0)
        server = EmbeddedHttpServer(create_app(a))
        host, port = await server.start("127.0.0.1:0")
        try:
            yield a, b, f"http://{host}:{port}"
        finally:
            await server.stop()


@pytest.mark.asyncio
async def test_status_renders_node_and_peer_table(tmp_path: Path) -> None:
    async with served(tmp_path) as (a, b, url):
        a_id, b_id = node_id(a), node_id(b)
        result = await arun("status", "--admin-url", url)
        assert result.code == 0, result.err
        out = result.out
        assert f"natroute sidecar node {a_id} (ready)" in out
        beacon = next(iter(a.nat_observations))
        assert f"NAT              none ({beacon} saw" in out
        assert "(pick: hash)" in out
        assert "1 bootstrap + 0 discovered from registry" in out
        for column in ("peer", "path", "reason", "state", "addr", "rtt", "last heard"):
            assert column in out
        row = next(line for line in out.splitlines() if f" {b_id} " in line)
        assert "direct" in row
        assert "checked" in row
        assert "online" in row

        as_json = await arun("status", "--admin-url", url, "--json")
        body = json.loads(as_json.out)
        assert body["node_id"] == a_id
        assert [p["node_id"] for p in body["peers"]] == [b_id]

        detail = await arun("status", "--admin-url", url, "--peer", str(b_id))
        assert detail.code == 0
        assert f"peer {b_id} (b): direct (checked)" in detail.out
        assert "candidates" in detail.out
        assert "path events" in detail.out
        unknown = await arun("status", "--admin-url", url, "--peer", "424242")
        assert unknown.code == 1
        assert "no peer with node ID 424242 (HTTP 404 peer_not_found)" in unknown.err
        bad = await arun("status", "--admin-url", url, "--peer", "ABC!")
        assert bad.code == 1
        assert "HTTP 400 invalid_peer_id" in bad.err
        escape = await arun("status", "--admin-url", url, "--peer", "1/../../../healthz")
        assert escape.code == 1  # quoted: never reaches another endpoint
        assert "HTTP 404" in escape.err


@pytest.mark.asyncio
async def test_relay_punch_refresh_and_forget(tmp_path: Path) -> None:
    async with served(tmp_path) as (a, b, url):
        b_id = str(node_id(b))
        admin = ["--admin-url", url, "--admin-token", TOKEN]
        on = await arun("relay", b_id, "on", "--pinned", *admin)
        assert on.code == 0, on.err
        assert on.out.strip() == f"peer {b_id}: relay (operator, pinned)"
        assert a.manager.is_relay_pinned(node_id(b))
        off = await arun("relay", b_id, "off", *admin)
        assert off.out.strip() == f"peer {b_id}: relay (checking)"  # direct once a check answers
        await wait_for(lambda: not a.manager.is_relay_peer(node_id(b)), "direct again", 5)

        ping = await arun("ping", b_id, "--count", "2", *admin)
        assert ping.code == 0, ping.err
        lines = ping.out.splitlines()
        assert sum(line.startswith(f"pong from {b_id}") for line in lines) == 4, ping.out
        assert any("via direct" in line for line in lines)
        assert any("via relay" in line for line in lines)
        assert lines[-1] == "path in use: direct"
        as_json = json.loads((await arun("ping", b_id, "--count", "1", "--json", *admin)).out)
        assert {r["path"] for r in as_json["results"]} == {"direct", "relay"}
        assert all(r["rtt_ms"] > 0 for r in as_json["results"])
        nobody = await arun("ping", "424242", *admin)
        assert nobody.code == 1
        assert "peer_not_found" in nobody.err

        punch = await arun("punch", b_id, *admin)
        assert punch.code == 0
        assert "checks running" in punch.out
        refresh = await arun("refresh", *admin)
        assert refresh.code == 0
        assert "registry" in refresh.out
        for command in (["refresh"], ["punch", b_id], ["relay", b_id, "off"]):
            as_json = await arun(*command, "--json", *admin)
            assert as_json.code == 0, (command, as_json.err)
            assert isinstance(json.loads(as_json.out), dict), command

        # --token: the former spelling of --admin-token, still accepted
        wrong = await arun("relay", b_id, "on", "--admin-url", url, "--token", "nope")
        assert wrong.code == 1
        assert "HTTP 401 auth_invalid" in wrong.err
        assert "pass --admin-token or set $NATROUTE_ADMIN_TOKEN" in wrong.err
        forget = await arun("forget", b_id, *admin)
        assert forget.code == 0
        assert a.engine.peers.get(node_id(b)) is None
        again = await arun("forget", "424242", *admin)  # never a peer
        assert again.code == 1
        assert "peer_not_found" in again.err
        # ping by name a node that is no peer (any more): looked up, then probed
        by_name = await arun("ping", "b", "--count", "1", *admin)
        assert by_name.code == 0, by_name.err
        assert f"pong from {b_id} (b) via relay" in by_name.out


# -- netcheck ----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_netcheck_reports_mapping_endpoints_and_rtts(tmp_path: Path) -> None:
    async with running_stack(tmp_path, beacons=2) as stack:
        beacons = ",".join(stack.beacon_addrs)
        human = await arun("netcheck", "--beacons", beacons, "--timeout", "3")
        assert human.code == 0, human.err
        assert "UDP              works" in human.out
        assert "NAT              none" in human.out
        for addr in stack.beacon_addrs:
            assert addr in human.out
        result = await arun("netcheck", "--registry-url", stack.registry_url, "--json")
        body = json.loads(result.out)
        assert body["udp"] is True
        assert body["nat_type"] == "none"
        assert body["hairpin"] is None  # no NAT to hairpin through
        assert {b["beacon"] for b in body["beacons"]} == set(stack.beacon_addrs)
        assert all(b["rtt_ms"] > 0 for b in body["beacons"])
        assert {b["observed"] for b in body["beacons"]} == set(body["public_endpoints"])


def test_netcheck_without_answers_says_udp_is_blocked() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))  # bound, never answers
        port = silent.getsockname()[1]
        result = run(["netcheck", "--beacons", f"127.0.0.1:{port}", "--timeout", "0.3"])
    assert result.code == 1
    assert "blocked: no beacon answered" in result.out
    assert "no answer" in result.out
    usage = run(["netcheck", "--beacons", "", "--registry-url", ""])
    assert usage.code == 2


@pytest.mark.asyncio
async def test_status_against_a_beacon_says_what_it_is(tmp_path: Path) -> None:
    async with running_stack(tmp_path, http_listen="127.0.0.1:0") as stack:
        http = stack.beacons[0].http_addr
        assert http is not None
        result = await arun("status", "--admin-url", f"http://{http[0]}:{http[1]}")
    assert result.code == 1
    assert "is not a natroute sidecar's admin API (a natroute beacon answered" in result.err
