"""The routing core's one error hierarchy.

::

    RoutingError                    root of everything the routing core raises
    ├── NoAddressError              the seed's ErrNoAddress: no way to reach a peer
    ├── SocketNotSetError           a send was asked for before ``set_socket``
    ├── WireError (also ValueError) bytes that do not decode as a beacon message
    ├── ResolveError                a beacon address that does not resolve
    ├── DiscoveryError              endpoint discovery / RTT probe failed
    ├── RegistryError               a BeaconLister call failed or was missing
    ├── CacheError                  the on-disk beacon cache could not be read/written
    └── UsageError (also ValueError) the API was called with invalid arguments

``SendError`` is not a RoutingError: it is the ``OSError`` a socket raised,
re-raised by ``Manager.write_frame`` with the path it was sent on, so callers
that catch ``OSError`` keep working.
"""

from __future__ import annotations

import errno

__all__ = [
    "CacheError",
    "DiscoveryError",
    "NoAddressError",
    "RegistryError",
    "ResolveError",
    "RoutingError",
    "SocketNotSetError",
    "UsageError",
    "WireError",
    "is_icmp_unreachable",
]


class RoutingError(Exception):
    """Root of every error the routing core raises."""


class NoAddressError(RoutingError):
    """No UDP address for a peer: neither a direct address nor a relay path.

    The seed's ``ErrNoAddress`` (text ``routing: no address for peer``).
    """

    def __init__(self, node_id: int | None = None) -> None:
        self.node_id = node_id
        text = "routing: no address for peer"
        if node_id is not None:
            text += f": node {node_id}"
        super().__init__(text)


class SocketNotSetError(RoutingError):
    """A send was requested before ``Manager.set_socket`` wired a socket."""

    def __init__(self) -> None:
        super().__init__("routing: socket not set")


class WireError(RoutingError, ValueError):
    """Bytes that do not decode as a valid beacon message."""


class ResolveError(RoutingError):
    """A beacon address could not be parsed or resolved."""


class DiscoveryError(RoutingError):
    """Endpoint discovery or an RTT probe against a beacon failed."""


class RegistryError(RoutingError):
    """The registry's beacon list could not be fetched."""


class CacheError(RoutingError):
    """The on-disk beacon cache could not be read, parsed or written."""


class UsageError(RoutingError, ValueError):
    """The API was called with invalid arguments (e.g. a node ID out of range)."""


_ICMP_ERRNOS = frozenset({errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH})


def is_icmp_unreachable(err: BaseException | None) -> bool:
    """True if ``err`` or an exception it wraps is an ICMP-unreachable error.

    ``ConnectionRefusedError`` or an ``OSError`` with errno ECONNREFUSED,
    EHOSTUNREACH or ENETUNREACH, found through ``__cause__``/``__context__``
    (Go's ``errors.Is`` walk, spec §6.11). EAGAIN, ENOBUFS, EMSGSIZE and
    everything else are not.
    """
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, ConnectionRefusedError):
            return True
        if isinstance(err, OSError) and err.errno in _ICMP_ERRNOS:
            return True
        err = err.__cause__ or err.__context__
    return False
