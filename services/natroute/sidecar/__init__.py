"""natroute.sidecar: the routing Manager on a live UDP socket, a local data plane, an admin API.

``node`` holds the peer logic (sans-I/O), ``crypto`` the per-peer frame
encryption, ``udp`` the socket shells, ``service`` the start-up and timers,
``admin`` the HTTP API.
"""

__all__: list[str] = []
