"""Garbage sprayer: a bounded number of bad datagrams at one UDP target.

``spray TARGET COUNT SEED`` sends COUNT datagrams to ``host:port`` from one
socket, cycling through three kinds (scenario 8 of issue 6):

- random bytes of random length (0..300), often with a beacon type byte first;
- every beacon message type (``MSG_*``, docs/protocol.md) cut short after 0..8 bytes;
- relay frames (``encode_relay``) truncated inside their 9-byte header.

It paces itself (a short pause every 50 datagrams) so the socket buffers of a
2-core machine do not drop them before the target has seen them, and prints
``{"sent": N}``. Seeded, so a failure can be replayed.
"""

from __future__ import annotations

import json
import random
import socket
import sys
import time

from natroute.routing.addr import split_host_port
from natroute.routing.wire import RELAY_HEADER_LEN, encode_relay

__all__ = ["garbage", "main"]

_TYPES = range(0x01, 0x08)


def garbage(rng: random.Random, index: int) -> bytes:
    """The ``index``-th bad datagram."""
    match index % 3:
        case 0:
            body = rng.randbytes(rng.randrange(0, 301))
            return bytes([rng.choice(_TYPES)]) + body if rng.random() < 0.5 else body
        case 1:
            return bytes([_TYPES[index % len(_TYPES)]]) + rng.randbytes(rng.randrange(0, 9))
        case _:
            frame = encode_relay(rng.getrandbits(32), rng.getrandbits(32), rng.randbytes(16))
            return frame[: rng.randrange(1, RELAY_HEADER_LEN)]


def main(argv: list[str]) -> int:
    """Spray; 2 on a usage error."""
    if len(argv) != 3:
        print(json.dumps({"error": "usage: spray TARGET COUNT SEED"}))
        return 2
    target = split_host_port(argv[0])
    count, rng = int(argv[1]), random.Random(int(argv[2]))
    sent = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for index in range(count):
            try:
                sock.sendto(garbage(rng, index), target)
                sent += 1
            except OSError:
                pass  # an ICMP error from an earlier datagram: keep going
            if index % 50 == 49:
                time.sleep(0.02)
    print(json.dumps({"sent": sent}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
