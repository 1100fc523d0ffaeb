"""Minimal Discover reflector: answers each Discover with the source it observed.

Stands in for a beacon where only the STUN-style part of spec §3 matters: the
reply carries the (ip, port) the datagram arrived from, so a node behind a NAT
router learns its public mapping. Listens on every port given on the command
line; undecodable datagrams are dropped and counted (printed at exit).

Usage (inside a container): ``python3 -c SOURCE PORT [PORT...]``
"""

from __future__ import annotations

import selectors
import signal
import socket
import sys

from natroute.routing.errors import WireError
from natroute.routing.wire import Discover, DiscoverReply, decode_message, encode_message

__all__ = ["main", "reply_for"]


def reply_for(data: bytes, src: tuple[str, int]) -> bytes | None:
    """The reply to one datagram, or None when nothing is to be sent.

    Args:
        data: the datagram as received.
        src: where it came from (the sender's public mapping).

    Returns:
        An encoded DiscoverReply for a Discover, None for anything else.

    Raises:
        WireError: ``data`` is not a beacon message.
    """
    msg = decode_message(data)
    if isinstance(msg, Discover):
        return encode_message(DiscoverReply((src[0], src[1])))
    return None


def main(argv: list[str]) -> int:
    """Serve until SIGTERM/SIGINT.

    Args:
        argv: the ports to listen on (UDP, all addresses).

    Returns:
        The exit status.
    """
    ports = [int(arg) for arg in argv] or [9001]
    selector = selectors.DefaultSelector()
    for port in ports:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("0.0.0.0", port))
        selector.register(sock, selectors.EVENT_READ)
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"reflector ready ports={','.join(map(str, ports))}", flush=True)
    answered = dropped = 0
    while not stopping:
        for key, _ in selector.select(timeout=0.5):
            ready = key.fileobj
            assert isinstance(ready, socket.socket)
            data, src = ready.recvfrom(2048)
            try:
                reply = reply_for(data, src)
            except WireError:
                dropped += 1
                continue
            if reply is not None:
                ready.sendto(reply, src)
                answered += 1
    print(f"reflector stopped answered={answered} dropped={dropped}", flush=True)
    selector.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
