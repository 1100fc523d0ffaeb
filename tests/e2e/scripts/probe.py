"""Node-side raw probes: what a NAT router maps, filters and hairpins.

Runs inside lab containers (``python3 -c``) with the image's natroute package
and prints one JSON object per line, so the harness can assert on what a node
observed. ``--port`` binds the probe's socket to a fixed port (default: any).

- ``discover [--port P] BEACON...``: one socket, a Discover to each beacon
  (``natroute.routing.discover.discover_endpoint``); prints
  ``{"local": [ip, port], "observed": [[ip, port], ...]}``. An endpoint-
  independent mapping gives one public port for every destination, a
  symmetric one a port per destination.
- ``listen [--port P] BEACON SECONDS``: discovers through BEACON (creating the
  mapping), prints ``{"observed": [ip, port]}``, then collects everything else
  that arrives for SECONDS and prints ``{"received": [[ip, port, text], ...]}``:
  the router's filtering of unsolicited datagrams.
- ``send [--port P] TARGET COUNT``: sends COUNT probe datagrams to ``host:port``.
- ``sink PORT SECONDS``: binds PORT, prints ``{"bound": PORT}``, collects for
  SECONDS and prints ``{"received": [[ip, port, text], ...]}``.
- ``punch [--port P] BEACON PEER_FILE SECONDS``: discovers through BEACON, prints
  ``{"observed": [ip, port]}``, waits (at most PEER_WAIT s) for the harness to
  write the peer's public ``host:port`` into PEER_FILE, then every 0.1 s sends a
  datagram to it and to every other endpoint of the peer's address it has heard
  from (peer-reflexive learning, as ICE does), for SECONDS; prints
  ``{"received": [[ip, port, text], ...]}`` (a hole punch).
- ``tcp TARGET``: a TCP connection attempt; prints ``{"connected": bool}``.

Failures print ``{"error": "..."}`` and exit 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import sys
import time
from pathlib import Path

from natroute.routing.addr import split_host_port
from natroute.routing.discover import discover_endpoint
from natroute.routing.errors import RoutingError

__all__ = ["PROBE_PAYLOAD", "PUNCH_PAYLOAD", "main"]

#: What ``send`` puts in each datagram (not a beacon message: first byte >= 0x10).
PROBE_PAYLOAD = b"natroute-e2e probe"
#: What ``punch`` sends to the peer.
PUNCH_PAYLOAD = b"natroute-e2e punch"
PUNCH_INTERVAL = 0.1
#: How long ``punch`` waits for the harness to hand over the peer's endpoint.
PEER_WAIT = 10.0
DISCOVER_TIMEOUT = 2.0
TCP_TIMEOUT = 2.0
#: Cap on the endpoints ``punch`` learns for its peer.
MAX_LEARNED = 16


def _emit(obj: object) -> None:
    print(json.dumps(obj), flush=True)


def _socket(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", port))
    return sock


def _collect(sock: socket.socket, seconds: float) -> list[list[object]]:
    received: list[list[object]] = []
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        sock.settimeout(remaining)
        try:
            data, src = sock.recvfrom(2048)
        except TimeoutError:
            break
        except ConnectionRefusedError:  # an ICMP error for an earlier send
            continue
        received.append([src[0], src[1], data.decode("utf-8", "replace")])
    return received


def _discover(port: int, beacons: list[str]) -> None:
    with _socket(port) as sock:
        observed = [discover_endpoint(b, 0, sock, DISCOVER_TIMEOUT) for b in beacons]
        _emit({"local": list(sock.getsockname()), "observed": [list(a) for a in observed]})


def _listen(port: int, beacon: str, seconds: float) -> None:
    with _socket(port) as sock:
        observed = discover_endpoint(beacon, 0, sock, DISCOVER_TIMEOUT)
        _emit({"observed": list(observed)})
        _emit({"received": _collect(sock, seconds)})


def _sink(port: int, seconds: float) -> None:
    with _socket(port) as sock:
        _emit({"bound": sock.getsockname()[1]})
        _emit({"received": _collect(sock, seconds)})


def _wait_for_file(path: Path, seconds: float) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists() and (text := path.read_text().strip()):
            return text
        time.sleep(0.05)
    raise TimeoutError(f"no peer endpoint in {path} after {seconds} s")


def _punch(port: int, beacon: str, peer_file: str, seconds: float) -> None:
    with _socket(port) as sock:
        observed = discover_endpoint(beacon, 0, sock, DISCOVER_TIMEOUT)
        _emit({"observed": list(observed)})
        peer = split_host_port(_wait_for_file(Path(peer_file), PEER_WAIT))
        targets = [peer]
        received: list[list[object]] = []
        deadline = time.monotonic() + seconds
        next_send = 0.0
        while (now := time.monotonic()) < deadline:
            if now >= next_send:
                for target in targets:
                    with contextlib.suppress(ConnectionRefusedError):
                        sock.sendto(PUNCH_PAYLOAD, target)
                next_send = now + PUNCH_INTERVAL
            sock.settimeout(max(0.001, min(next_send, deadline) - now))
            try:
                data, src = sock.recvfrom(2048)
            except (TimeoutError, ConnectionRefusedError):
                continue
            received.append([src[0], src[1], data.decode("utf-8", "replace")])
            learned = (src[0], src[1])
            if src[0] == peer[0] and learned not in targets and len(targets) < MAX_LEARNED:
                targets.append(learned)  # peer-reflexive: answer where it came from
        _emit({"received": received, "targets": [list(t) for t in targets]})


def _send(port: int, target: str, count: int) -> None:
    addr = split_host_port(target)
    with _socket(port) as sock:
        for _ in range(count):
            sock.sendto(PROBE_PAYLOAD, addr)
    _emit({"sent": count})


def _tcp(target: str) -> None:
    try:
        with socket.create_connection(split_host_port(target), timeout=TCP_TIMEOUT):
            _emit({"connected": True})
    except OSError as exc:
        _emit({"connected": False, "error": f"{type(exc).__name__}: {exc}"})


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="probe", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, args in (
        ("discover", ("beacons+",)),
        ("listen", ("beacon", "seconds")),
        ("send", ("target", "count")),
        ("punch", ("beacon", "peer_file", "seconds")),
    ):
        command = sub.add_parser(name)
        command.add_argument("--port", type=int, default=0)
        for arg in args:
            command.add_argument(arg.rstrip("+"), nargs="+" if arg.endswith("+") else None)
    sink = sub.add_parser("sink")
    sink.add_argument("port", type=int)
    sink.add_argument("seconds", type=float)
    sub.add_parser("tcp").add_argument("target")
    return parser


def main(argv: list[str]) -> int:
    """Run one probe command (see the module docstring).

    Returns:
        0 on success, 1 when a probe failed (discovery, a socket error), 2 on a
        usage error.
    """
    try:
        args = _parser().parse_args(argv)
    except SystemExit:
        _emit({"error": f"usage: {' '.join(argv)}"})
        return 2
    try:
        match args.command:
            case "discover":
                _discover(args.port, args.beacons)
            case "listen":
                _listen(args.port, args.beacon, float(args.seconds))
            case "send":
                _send(args.port, args.target, int(args.count))
            case "sink":
                _sink(args.port, args.seconds)
            case "punch":
                _punch(args.port, args.beacon, args.peer_file, float(args.seconds))
            case "tcp":
                _tcp(args.target)
    except (RoutingError, OSError) as exc:
        _emit({"error": f"{type(exc).__name__}: {exc}"})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
