"""Node-side probe: endpoint discovery and unsolicited-datagram checks.

Runs inside lab containers with the image's natroute package and prints one
JSON object per line, so the harness can assert on what a node observed:

- ``discover BEACON [BEACON...]``: one socket, a Discover to each beacon
  (``natroute.routing.discover.discover_endpoint``, spec §5.8); prints
  ``{"local": [ip, port], "observed": [[ip, port], ...]}``. A cone router gives
  one public port for all beacons, a symmetric router one per destination.
- ``listen BEACON SECONDS``: discovers through BEACON (creating the mapping),
  prints ``{"observed": [ip, port]}``, then collects everything else that arrives
  for SECONDS and prints ``{"received": [[ip, port, text], ...]}``; this shows the
  router's filtering of unsolicited datagrams.
- ``send TARGET COUNT``: sends COUNT probe datagrams to ``host:port``.
- ``punch BEACON PEER_FILE SECONDS``: discovers through BEACON, prints
  ``{"observed": [ip, port]}``, waits (at most PEER_WAIT s) for the harness to write
  the peer's public ``host:port`` into PEER_FILE, then sends a datagram to it
  every 0.1 s for SECONDS while collecting what the peer sends; prints
  ``{"received": [[ip, port, text], ...]}`` (a hole punch, spec §5.4).

Failures print ``{"error": "..."}`` and exit 1.
"""

from __future__ import annotations

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


def _emit(obj: object) -> None:
    print(json.dumps(obj), flush=True)


def _discover(beacons: list[str]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("0.0.0.0", 0))
        observed = [discover_endpoint(b, 0, sock, DISCOVER_TIMEOUT) for b in beacons]
        _emit({"local": list(sock.getsockname()), "observed": [list(a) for a in observed]})


def _listen(beacon: str, seconds: float) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("0.0.0.0", 0))
        observed = discover_endpoint(beacon, 0, sock, DISCOVER_TIMEOUT)
        _emit({"observed": list(observed)})
        received: list[list[object]] = []
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            sock.settimeout(remaining)
            try:
                data, src = sock.recvfrom(2048)
            except TimeoutError:
                break
            received.append([src[0], src[1], data.decode("utf-8", "replace")])
        _emit({"received": received})


def _wait_for_file(path: Path, seconds: float) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists() and (text := path.read_text().strip()):
            return text
        time.sleep(0.05)
    raise TimeoutError(f"no peer endpoint in {path} after {seconds} s")


def _punch(beacon: str, peer_file: str, seconds: float) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("0.0.0.0", 0))
        observed = discover_endpoint(beacon, 0, sock, DISCOVER_TIMEOUT)
        _emit({"observed": list(observed)})
        peer = split_host_port(_wait_for_file(Path(peer_file), PEER_WAIT))
        received: list[list[object]] = []
        deadline = time.monotonic() + seconds
        next_send = 0.0
        while (now := time.monotonic()) < deadline:
            if now >= next_send:
                sock.sendto(PUNCH_PAYLOAD, peer)
                next_send = now + PUNCH_INTERVAL
            sock.settimeout(max(0.001, min(next_send, deadline) - now))
            try:
                data, src = sock.recvfrom(2048)
            except TimeoutError:
                continue
            received.append([src[0], src[1], data.decode("utf-8", "replace")])
        _emit({"received": received})


def _send(target: str, count: int) -> None:
    addr = split_host_port(target)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _ in range(count):
            sock.sendto(PROBE_PAYLOAD, addr)
    _emit({"sent": count})


def main(argv: list[str]) -> int:
    """Run one probe command.

    Args:
        argv: ``discover BEACON...`` | ``listen BEACON SECONDS`` | ``send TARGET COUNT``
            | ``punch BEACON PEER_FILE SECONDS``.

    Returns:
        0 on success, 1 when discovery failed, 2 on a usage error.
    """
    try:
        match argv:
            case ["discover", *beacons] if beacons:
                _discover(beacons)
            case ["listen", beacon, seconds]:
                _listen(beacon, float(seconds))
            case ["send", target, count]:
                _send(target, int(count))
            case ["punch", beacon, peer_file, seconds]:
                _punch(beacon, peer_file, float(seconds))
            case _:
                _emit({"error": f"usage: {__doc__}"})
                return 2
    except (RoutingError, OSError) as exc:
        _emit({"error": f"{type(exc).__name__}: {exc}"})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
