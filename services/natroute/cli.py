"""``natroute``: the operator's command line for a sidecar's admin API, and a beacon-pick demo.

Commands::

    natroute status  [--admin-url URL] [--json] [--peer ID]
    natroute relay   ID on|off [--pinned] [--admin-url URL] [--admin-token T]
    natroute punch   ID [--admin-url URL] [--admin-token T]
    natroute forget  ID [--admin-url URL] [--admin-token T]
    natroute refresh [--admin-url URL] [--admin-token T]
    natroute ping    ID [--count N] [--json] [--admin-url URL] [--admin-token T]
    natroute netcheck [--beacons a:1,b:2 | --registry-url URL] [--timeout S] [--json]
    natroute pick-beacon --beacons a:1,b:2 (--key-hex HEX | --key-file identity.json)
                         [--rtt ADDR=MS ...] [--json]

Options take the daemons' names for the same things, and each reads
``NATROUTE_<OPTION>`` from the environment; on a sidecar's host the
sidecar's own variables are the next default, so nothing needs to be passed
there (README.md, "Configuration"):

* ``--admin-url``: ``$NATROUTE_ADMIN_URL``, else ``http://`` and the
  sidecar's ``$NATROUTE_SIDECAR_HTTP_LISTEN`` (a wildcard host as
  127.0.0.1), else ``http://127.0.0.1:8080``;
* ``--admin-token``: ``$NATROUTE_ADMIN_TOKEN``, else ``$NATROUTE_SIDECAR_ADMIN_TOKEN``;
* ``--registry-url``: ``$NATROUTE_REGISTRY_URL``, else ``$NATROUTE_SIDECAR_REGISTRY_URL``;
* ``--beacons``: ``$NATROUTE_BEACONS``, else ``$NATROUTE_SIDECAR_BEACONS``.

The old spellings ``--admin``, ``--token`` and ``--registry`` still work.
The status commands only read the admin API's JSON
(:mod:`natroute.sidecar.status` snapshots); ``pick-beacon`` runs the routing
core's selection itself (docs/protocol.md, "Beacon pick"), with no
sidecar.

Exit codes: 0 success, 1 failure (sidecar unreachable, refused, unknown
peer, unreadable key file), 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any, NoReturn, TextIO
from urllib.parse import quote

import httpx
from rich.console import Console
from rich.table import Table
from rich.text import Text

from natroute._service.version import natroute_version
from natroute.routing.addr import format_addr, split_host_port
from natroute.routing.selection import fnv1a32, parse_beacon_list, pick_beacon, pick_beacon_with_rtt
from natroute.sidecar.status import format_age

__all__ = ["CliError", "UsageError", "build_parser", "main"]

DEFAULT_ADMIN = "http://127.0.0.1:8080"
_WILDCARDS = frozenset({"0.0.0.0", "::", ""})


def _env(*names: str, default: str = "") -> str:
    """The first of the environment variables ``names`` that is set, else ``default``."""
    return next((os.environ[n] for n in names if n in os.environ), default)


def _admin_url() -> str:
    """``$NATROUTE_ADMIN_URL``, else the local sidecar's own HTTP listen address."""
    url = os.environ.get("NATROUTE_ADMIN_URL")
    if url:
        return url
    listen = os.environ.get("NATROUTE_SIDECAR_HTTP_LISTEN", "")
    try:
        host, port = split_host_port(listen)
    except ValueError:
        return DEFAULT_ADMIN
    host = "127.0.0.1" if host in _WILDCARDS else host
    return f"http://{format_addr((host, port))}"


class CliError(Exception):
    """A failure to report on stderr with exit code 1."""


class UsageError(CliError):
    """Bad command-line input: exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises :class:`UsageError` instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.format_usage().rstrip()}\n{self.prog}: error: {message}")


def _old_name(parser: argparse.ArgumentParser, flag: str, dest: str) -> None:
    """A former spelling of an option: still accepted, not shown in ``--help``."""
    parser.add_argument(flag, dest=dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def _admin_options() -> _Parser:
    common = _Parser(add_help=False)
    common.add_argument(
        "--admin-url",
        dest="admin",
        metavar="URL",
        default=_admin_url(),
        help="the sidecar's admin API (default: $NATROUTE_ADMIN_URL, else "
        f"$NATROUTE_SIDECAR_HTTP_LISTEN, else {DEFAULT_ADMIN})",
    )
    _old_name(common, "--admin", "admin")
    common.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="seconds to wait for the admin API (default: 5)",
    )
    return common


def _token_options() -> _Parser:
    common = _Parser(add_help=False)
    _old_name(common, "--token", "token")
    common.add_argument(
        "--admin-token",
        dest="token",
        metavar="TOKEN",
        default=_env("NATROUTE_ADMIN_TOKEN", "NATROUTE_SIDECAR_ADMIN_TOKEN"),
        help="the sidecar's admin token, for changes "
        "(default: $NATROUTE_ADMIN_TOKEN, else $NATROUTE_SIDECAR_ADMIN_TOKEN)",
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    """The ``natroute`` argument parser (subcommand in ``args.command``)."""
    parser = _Parser(
        prog="natroute",
        description="Operate a natroute sidecar.",
        epilog="Options read NATROUTE_<OPTION> from the environment (NATROUTE_ADMIN_URL, "
        "NATROUTE_ADMIN_TOKEN, NATROUTE_REGISTRY_URL, NATROUTE_BEACONS), else the "
        "sidecar's own variables: on a sidecar's host nothing needs to be passed. "
        "Exit status: 0 done, 1 failed, 2 usage error.",
    )
    parser.add_argument("--version", action="version", version=natroute_version())
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    admin, token = _admin_options(), _token_options()

    as_json = _Parser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print the API's JSON")

    status = sub.add_parser("status", parents=[admin, as_json], help="show node status and peers")
    status.add_argument(
        "--peer", help="show one peer in detail (node ID, decimal or 0x hex, or name)"
    )

    relay = sub.add_parser(
        "relay", parents=[admin, token, as_json], help="force a peer to relay or back"
    )
    relay.add_argument("peer", help="node ID or name")
    relay.add_argument("state", choices=["on", "off"])
    relay.add_argument("--pinned", action="store_true", help="pin (no heuristic undoes it)")

    for name, text in (
        ("punch", "run a peer's connectivity checks now"),
        ("forget", "drop a peer"),
    ):
        cmd = sub.add_parser(name, parents=[admin, token, as_json], help=text)
        cmd.add_argument("peer", help="node ID or name")

    sub.add_parser("refresh", parents=[admin, token, as_json], help="run a beacon refresh tick now")

    ping = sub.add_parser(
        "ping",
        parents=[admin, token, as_json],
        help="round trips to a peer, direct and through the relay",
    )
    ping.add_argument("peer", help="node ID or name")
    ping.add_argument("--count", type=int, default=3, help="rounds of probes (default 3)")
    ping.add_argument("--wait", type=float, default=1.0, help="seconds to wait for each answer")

    net = sub.add_parser(
        "netcheck", help="what this network does to UDP: NAT, public endpoints, RTTs (no sidecar)"
    )
    net.add_argument(
        "--beacons",
        metavar="HOST:PORT,...",
        default=_env("NATROUTE_BEACONS", "NATROUTE_SIDECAR_BEACONS"),
        help="beacons to ask (default: $NATROUTE_BEACONS, else $NATROUTE_SIDECAR_BEACONS, "
        "else the registry's list)",
    )
    _old_name(net, "--registry", "registry")
    net.add_argument(
        "--registry-url",
        dest="registry",
        metavar="URL",
        default=_env("NATROUTE_REGISTRY_URL", "NATROUTE_SIDECAR_REGISTRY_URL"),
        help="registry for the beacon list "
        "(default: $NATROUTE_REGISTRY_URL, else $NATROUTE_SIDECAR_REGISTRY_URL)",
    )
    net.add_argument(
        "--timeout",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="seconds to wait for answers (default: 2)",
    )
    net.add_argument("--json", action="store_true", help="print JSON")

    pick = sub.add_parser("pick-beacon", help="show which beacon a key picks (hash, RTT)")
    pick.add_argument("--beacons", required=True, help="host:port,host:port,... (in this order)")
    key = pick.add_mutually_exclusive_group(required=True)
    key.add_argument("--key-hex", help="the identity public key bytes, hex")
    key.add_argument("--key-file", help="a sidecar identity.json (its Ed25519 public key)")
    pick.add_argument(
        "--rtt",
        action="append",
        default=[],
        metavar="ADDR=MS",
        help="a measured RTT in milliseconds (repeat); enables the RTT override",
    )
    pick.add_argument("--json", action="store_true", help="print JSON")
    return parser


# -- admin API client -----------------------------------------------------------


class _Admin:
    """A small sync client of the admin API with operator-readable errors."""

    def __init__(
        self, base: str, timeout: float, token: str, transport: httpx.BaseTransport | None
    ) -> None:
        if not base.startswith(("http://", "https://")):
            raise UsageError(f"--admin-url must be an http(s) URL, not {base!r}")
        self.base = base.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.Client(
            base_url=self.base, timeout=timeout, headers=headers, transport=transport
        )

    def __enter__(self) -> _Admin:
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.close()

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            resp = self._client.request(method, path, json=body)
        except httpx.ConnectError as exc:
            raise CliError(
                f"is the sidecar running? admin API at {self.base} not reachable ({exc})"
            ) from exc
        except httpx.TimeoutException as exc:
            raise CliError(f"admin API at {self.base} did not answer in time") from exc
        except httpx.HTTPError as exc:
            raise CliError(f"admin API at {self.base}: {exc}") from exc
        if resp.is_success:
            return resp.json() if resp.content else None
        try:
            err = resp.json()["error"]
            detail = f"{err['message']} (HTTP {resp.status_code} {err['code']})"
        except (ValueError, KeyError, TypeError):
            detail = f"HTTP {resp.status_code} from {method} {path}"
        if resp.status_code in (401, 403):
            detail += (
                "; pass --admin-token or set $NATROUTE_ADMIN_TOKEN "
                "(the sidecar's NATROUTE_SIDECAR_ADMIN_TOKEN)"
            )
        raise CliError(detail)


# -- rendering ------------------------------------------------------------------


def _print_json(console: Console, data: Any) -> None:
    console.out(json.dumps(data, indent=2), highlight=False)


def _ago(seconds: float | None) -> str:
    return "never" if seconds is None else f"{format_age(seconds)} ago"


def _yes(value: Any) -> str:
    return "yes" if value else "no"


def _kv(rows: Sequence[tuple[str, str | Text]]) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for key, value in rows:
        grid.add_row(key, value)
    return grid


def _rtt(ms: float | None) -> str:
    return "-" if ms is None else f"{ms:.1f}ms"


def _peer_addr(p: dict[str, Any]) -> str:
    """The direct address, and the spray socket that carries it (port prediction)."""
    socket = f" (spray socket {p['socket']})" if p.get("socket") else ""
    return (p["addr"] or "-") + socket


def _peer_table(peers: list[dict[str, Any]]) -> Table:
    table = Table(title=f"peers ({len(peers)})", title_justify="left")
    for name in ("peer", "name", "path", "reason", "state", "addr", "rtt", "last heard"):
        table.add_column(name, justify="right" if name in ("peer", "rtt") else "left")
    table.add_column("sent/recv pkts", justify="right")
    for p in peers:
        direct = p["path"] == "direct"
        table.add_row(
            str(p["node_id"]),
            p.get("name") or "-",
            Text(p["path"], style="green" if direct else "yellow"),
            p["reason"],
            Text(p["state"], style="red" if p["state"] == "offline" else ""),
            _peer_addr(p),
            _rtt(p["rtt_ms"] if direct else p["relay_rtt_ms"]),
            format_age(p["last_heard_age"]),
            f"{p['pkts_sent']}/{p['pkts_recv']}",
        )
    return table


def _transport(s: dict[str, Any]) -> str:
    if s["transport"] != "stream":
        return "udp"
    st = s["stream"]
    state = "open" if st["open"] else "down"
    retry = st["next_udp_try_in"]
    udp = f"; UDP tried again in {format_age(max(0.0, retry))}" if retry is not None else ""
    return f"stream {st['url'] or '-'} ({state}{udp})"


def render_status(console: Console, s: dict[str, Any]) -> None:
    """Print a ``/v1/status?peers=true`` body for a person."""
    b, c = s["beacon"], s["counters"]
    node = s["node_id"] if s["node_id"] is not None else "-"
    state = "ready" if s["ready"] else "starting"
    console.print(Text.assemble(("natroute sidecar", "bold"), f" node {node} ({state})"))
    rtt = ", ".join(f"{a} {ms:.1f}ms" for a, ms in b["rtt_ms"].items())
    observed = ", ".join(f"{k} saw {v}" for k, v in s["nat"]["observations"].items())
    cache = format_age(b["cache_age"]) if b["cache_age"] is not None else "none"
    if b["cache_error"]:
        cache += f" ({b['cache_error']})"
    refresh = _ago(b["last_refresh_age"])
    if b["last_refresh_errors"]:
        refresh += " - errors: " + "; ".join(b["last_refresh_errors"])
    drops = ", ".join(f"{k} {v}" for k, v in c["drops"].items() if v) or "none"
    rows = [
        ("public endpoint", s["public_endpoint"] or "-"),
        ("local address", s["local_addr"] or "-"),
        ("data plane", s["app_addr"] or "-"),
        ("NAT", f"{s['nat']['type']}" + (f" ({observed})" if observed else "")),
        ("transport", _transport(s)),
        ("relay_only", _yes(s["relay_only"])),
        ("registered", _yes(s["registered"])),
        ("beacon", f"{b['pick'] or '-'} (pick: {b['reason'] or '-'})"),
        (
            "list",
            f"{len(b['bootstrap'])} bootstrap + {len(b['discovered'])} discovered "
            f"from {b['source']}",
        ),
        ("beacons", ", ".join(b["beacons"]) or "-"),
    ]
    if rtt:
        rows.append(("RTT", rtt))
    rows += [
        ("beacon reply", _ago(b["last_reply_age"])),
        ("last refresh", refresh),
        ("cache age", cache),
        ("uptime", format_age(s["uptime"])),
        (
            "peers",
            f"{s['peers_total']} ({s['peers_direct']} direct, {s['peers_relay']} relay, "
            f"{s['peers_offline']} offline)",
        ),
        (
            "frames",
            f"in {c['direct_in']} direct / {c['relayed_in']} relayed; "
            f"app {c['app_received']} sent / {c['app_delivered']} delivered",
        ),
        ("drops", drops),
    ]
    predict = s.get("predict")
    if predict and predict["enabled"]:
        rows.append(
            (
                "port prediction",
                f"sprays {predict['started']} started / {predict['succeeded']} succeeded / "
                f"{predict['failed']} failed; spray sockets open {predict['sockets_open']}",
            )
        )
    console.print(_kv(rows))
    console.print(_peer_table(s["peers"]))


def render_peer(console: Console, p: dict[str, Any]) -> None:
    """Print one ``/v1/peers/{id}`` body with its path history."""
    name = f" ({p['name']})" if p.get("name") else ""
    console.print(
        Text.assemble((f"peer {p['node_id']}{name}", "bold"), f": {p['path']} ({p['reason']})")
    )
    rows = [
        ("state", p["state"]),
        ("address", _peer_addr(p)),
        ("rtt direct / relay", f"{_rtt(p['rtt_ms'])} / {_rtt(p['relay_rtt_ms'])}"),
        ("last heard", format_age(p["last_heard_age"])),
        ("relay flag / pinned", f"{_yes(p['relay'])} / {_yes(p['pinned'])}"),
        ("pinned by operator", _yes(p["operator_pinned"])),
        ("relay_only", _yes(p["relay_only"])),
        ("last direct receipt", format_age(p["last_direct_recv_age"])),
        ("last send", format_age(p["last_send_age"])),
        ("blackhole misses", str(p["blackhole_misses"])),
        ("send errors", str(p["send_errors"])),
        ("direct clears", str(p["direct_clears"])),
        ("packets sent / recv", f"{p['pkts_sent']} / {p['pkts_recv']}"),
        ("bytes sent / recv", f"{p['bytes_sent']} / {p['bytes_recv']}"),
        ("receipts direct / relay", f"{p['direct_recv']} / {p['relay_recv']}"),
        ("probes sent / acks", f"{p['probes_sent']} / {p['acks_recv']}"),
        ("known for", format_age(p["known_for"])),
    ]
    console.print(_kv(rows))
    cands = Table(title="candidates", title_justify="left")
    for col in ("addr", "kind", "probes", "acks", "rtt", "last ack", ""):
        cands.add_column(col)
    for c in p["candidates"]:
        cands.add_row(
            c["addr"],
            c["kind"],
            str(c["probes_sent"]),
            str(c["acks"]),
            _rtt(c["rtt_ms"]),
            format_age(c["last_ack_age"]),
            "chosen" if c["chosen"] else ("failed" if c["failed"] else ""),
        )
    console.print(cands)
    events = Table(title="path events", title_justify="left")
    for name in ("ago", "path", "reason", "detail"):
        events.add_column(name)
    for e in reversed(p["events"]):
        events.add_row(format_age(e["age"]), e["path"], e["reason"], e["detail"])
    console.print(events)


# -- commands -------------------------------------------------------------------


def _peer_path(text: str) -> str:
    # validated by the API (decimal or 0x hex); quoted so no path can be injected
    return "/v1/peers/" + quote(text.strip(), safe="")


_SIDECAR_KEYS = frozenset({"node_id", "nat", "beacon", "counters", "peers"})


def _status(args: argparse.Namespace, api: _Admin, console: Console) -> int:
    one = args.peer is not None
    body = api.call("GET", _peer_path(args.peer) if one else "/v1/status?peers=true")
    if not one and not (isinstance(body, dict) and body.keys() >= _SIDECAR_KEYS):
        what = "a natroute beacon" if isinstance(body, dict) and "beacon_id" in body else "it"
        raise CliError(
            f"{api.base} is not a natroute sidecar's admin API ({what} answered /v1/status); "
            "point --admin-url (or $NATROUTE_ADMIN_URL) at a sidecar"
        )
    if args.json:
        _print_json(console, body)
    else:
        (render_peer if one else render_status)(console, body)
    return 0


def _ping(args: argparse.Namespace, api: _Admin, console: Console) -> int:
    body = api.call(
        "POST", _peer_path(args.peer) + "/ping", {"count": args.count, "timeout": args.wait}
    )
    if args.json:
        _print_json(console, body)
    else:
        who = f"{body['node_id']}" + (f" ({body['name']})" if body["name"] else "")
        for r in body["results"]:
            via = f" {r['via']}" if r["via"] else ""
            if r["rtt_ms"] is None:
                console.print(f"no answer from {who} via {r['path']}{via} in {args.wait:g}s")
            else:
                console.print(f"pong from {who} via {r['path']}{via} in {r['rtt_ms']:.1f}ms")
        console.print(f"path in use: {body['path']}")
    answered = [r for r in body["results"] if r["rtt_ms"] is not None]
    return 0 if answered else 1


def _mutation(args: argparse.Namespace, api: _Admin, console: Console) -> int:
    if args.command == "relay":
        relay = args.state == "on"
        p = api.call(
            "PUT", _peer_path(args.peer) + "/relay", {"relay": relay, "pinned": args.pinned}
        )
        if args.json:
            _print_json(console, p)
            return 0
        flags = ", pinned" if p["operator_pinned"] else ""
        console.print(f"peer {p['node_id']}: {p['path']} ({p['reason']}{flags})")
    elif args.command == "punch":
        p = api.call("POST", _peer_path(args.peer) + "/punch")
        if args.json:
            _print_json(console, p)
            return 0
        console.print(
            f"peer {p['node_id']}: checks running ({p['probes_sent']} probes sent so far)"
        )
    elif args.command == "forget":
        api.call("DELETE", _peer_path(args.peer))
        if args.json:
            _print_json(console, {"forgotten": args.peer})
            return 0
        console.print(f"peer {args.peer}: forgotten")
    else:
        r = api.call("POST", "/v1/beacons/refresh")
        if args.json:
            _print_json(console, r)
            return 0
        rows: list[tuple[str, str | Text]] = [
            ("source", r["source"]),
            ("pick", f"{r['pick'] or '-'} ({r['reason']}{', swapped' if r['swapped'] else ''})"),
            ("beacons", ", ".join(r["beacons"]) or "-"),
        ]
        if r["rtt_ms"]:
            rows.append(("RTT", ", ".join(f"{a} {ms:.1f}ms" for a, ms in r["rtt_ms"].items())))
        for error in r["errors"]:
            rows.append(("error", Text(error, style="red")))
        console.print(_kv(rows))
    return 0


def _netcheck(args: argparse.Namespace, console: Console) -> int:
    from natroute.registry.client import RegistryClient, RegistryClientError
    from natroute.sidecar.netcheck import netcheck

    beacons = parse_beacon_list(args.beacons)
    streams: dict[str, str] = {}
    if not beacons:
        if not args.registry:
            raise UsageError("netcheck needs --beacons or --registry-url (or their environment)")
        try:
            with RegistryClient(args.registry, timeout=args.timeout) as registry:
                listed = registry.beacons()
        except RegistryClientError as exc:
            raise CliError(f"registry {args.registry}: {exc}") from exc
        beacons = [b.addr for b in listed]
        streams = {b.addr: b.stream_url for b in listed if b.stream_url}
        if not beacons:
            raise CliError(f"registry {args.registry} lists no live beacon")
    report = netcheck(beacons, timeout=args.timeout, stream_urls=streams)
    if args.json:
        _print_json(console, asdict(report))
        return 0 if report.udp else 1
    rows: list[tuple[str, str | Text]] = [
        ("UDP", "works" if report.udp else Text("blocked: no beacon answered", style="red")),
        ("local address", report.local or "-"),
        ("public endpoint", ", ".join(report.public_endpoints) or "-"),
        ("NAT", report.nat_type),
        ("mapping", report.mapping),
        ("filtering", report.filtering),
        ("hairpinning", "-" if report.hairpin is None else _yes(report.hairpin)),
        ("IPv6", _yes(report.ipv6)),
    ]
    for beacon, ok in report.stream.items():
        rows.append((f"stream relay {beacon}", "reachable over TCP" if ok else "unreachable"))
    console.print(_kv(rows))
    table = Table(title="beacons", title_justify="left")
    for col in ("beacon", "address", "sees us at", "rtt"):
        table.add_column(col)
    for b in report.beacons:
        rtt = "-" if b.rtt_ms is None else f"{b.rtt_ms:.1f}ms"
        table.add_row(b.beacon, b.addr or "-", b.observed or Text(b.error, style="red"), rtt)
    console.print(table)
    return 0 if report.udp else 1


def _key_bytes(args: argparse.Namespace) -> bytes:
    if args.key_hex is not None:
        try:
            return bytes.fromhex(args.key_hex)
        except ValueError as exc:
            raise UsageError(f"--key-hex is not hex: {exc}") from exc
    if not os.path.isfile(args.key_file):
        raise CliError(f"no identity file at {args.key_file}")
    from natroute.sidecar.identity import IdentityError, load_or_create_identity

    try:
        return load_or_create_identity(args.key_file).ed25519_public
    except (IdentityError, OSError) as exc:
        raise CliError(str(exc)) from exc


def _rtt_map(items: list[str]) -> dict[str, float]:
    rtt: dict[str, float] = {}
    for item in items:
        addr, sep, ms = item.rpartition("=")
        try:
            value = float(ms)
        except ValueError:
            value = -1.0
        if not sep or not addr or not value > 0:
            raise UsageError(f"--rtt wants ADDR=MS with MS > 0, not {item!r}")
        rtt[addr] = value / 1000.0
    return rtt


def _pick(args: argparse.Namespace, console: Console) -> int:
    beacons = parse_beacon_list(args.beacons)
    if not beacons:
        raise UsageError("--beacons is empty")
    key = _key_bytes(args)
    rtt = _rtt_map(args.rtt)
    h = fnv1a32(key)
    hash_pick = pick_beacon(beacons, key)
    out: dict[str, Any] = {
        "key_fnv1a32": f"0x{h:08X}",
        "beacons": beacons,
        "hash_pick": hash_pick,
        "hash_index": h % len(beacons) if len(beacons) > 1 else 0,
    }
    why = ""
    if rtt:
        pick = pick_beacon_with_rtt(beacons, key, rtt)
        out["rtt_ms"] = {a: round(t * 1000, 3) for a, t in rtt.items()}
        out["rtt_pick"] = pick
        out["reason"] = "rtt_override" if pick != hash_pick else "hash"
        if pick != hash_pick:
            hash_rtt = rtt.get(hash_pick)
            why = (
                f"hash pick did not answer; {pick} is fastest"
                if hash_rtt is None
                else f"{hash_pick} {hash_rtt * 1000:g} ms > 2 x {pick} {rtt[pick] * 1000:g} ms"
            )
        else:
            why = "hash pick within 2x of the fastest"
    if args.json:
        _print_json(console, out)
        return 0
    rows = [
        ("key fnv1a32", out["key_fnv1a32"]),
        ("beacons", f"{', '.join(beacons)} ({len(beacons)})"),
        ("hash pick", f"{hash_pick} (index {out['hash_index']} = 0x{h:08X} mod {len(beacons)})"),
    ]
    if rtt:
        rows.append(("rtt pick", f"{out['rtt_pick']} ({out['reason']}: {why})"))
    console.print(_kv(rows))
    return 0


def main(
    argv: Sequence[str] | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    transport: httpx.BaseTransport | None = None,
) -> int:
    """Run one ``natroute`` command.

    Args:
        argv: arguments without the program name (default: ``sys.argv[1:]``).
        stdout: where results go; ``stderr``: where errors go.
        transport: an httpx transport for the admin API (tests).

    Returns:
        The exit code: 0 success, 1 failure, 2 usage error.
    """
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    parser = build_parser()
    width = None if out.isatty() else 120
    # markup off: addresses and error texts from the sidecar are never parsed as styles
    console = Console(file=out, width=width, highlight=False, markup=False)
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
        with console.capture() as captured:
            code = _run(args, console, transport)
    except UsageError as exc:
        print(str(exc), file=err)
        return 2
    except CliError as exc:
        print(f"natroute: {exc}", file=err)
        return 1
    # rich pads table cells to the table's width; drop the trailing blanks
    out.writelines(line.rstrip() + "\n" for line in captured.get().splitlines())
    return code


def _run(args: argparse.Namespace, console: Console, transport: httpx.BaseTransport | None) -> int:
    if args.command == "pick-beacon":
        return _pick(args, console)
    if args.command == "netcheck":
        return _netcheck(args, console)
    with _Admin(args.admin, args.timeout, getattr(args, "token", ""), transport) as api:
        if args.command == "status":
            return _status(args, api, console)
        if args.command == "ping":
            return _ping(args, api, console)
        return _mutation(args, api, console)


if __name__ == "__main__":
    sys.exit(main())
