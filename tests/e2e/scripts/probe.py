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

Failures print ``{"error": "..."}`` and exit 1.
"""

from __future__ import annotations

import json
import socket
import sys
import time

from natroute.routing.addr import split_host_port
from natroute.routing.discover import discover_endpoint
from natroute.routing.errors import RoutingError

__all__ = ["PROBE_PAYLOAD", "main"]

#: What ``send`` puts in each datagram (not a beacon message: first byte >= 0x10).
PROBE_PAYLOAD = b"natroute-e2e probe"
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


def _send(target: str, count: int) -> None:
    addr = split_host_port(target)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _ in range(count):
            sock.sendto(PROBE_PAYLOAD, addr)
    _emit({"sent": count})


def main(argv: list[str]) -> int:
    """Run one probe command.

    Args:
        argv: ``discover BEACON...`` | ``listen BEACON SECONDS`` | ``send TARGET COUNT``.

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
            case _:
                _emit({"error": f"usage: {__doc__}"})
                return 2
    except (RoutingError, OSError) as exc:
        _emit({"error": f"{type(exc).__name__}: {exc}"})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
