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

``SendError`` is not a RoutingError but an ``OSError``: ``Manager.write_frame``
raises it, from the socket's own error, with the path the frame took
(``was_relay``), so callers that catch ``OSError`` keep working.
"""

from __future__ import annotations

import errno

__all__ = [
    "ICMP_UNREACHABLE_ERRNOS",
    "CacheError",
    "DiscoveryError",
    "NoAddressError",
    "RegistryError",
    "ResolveError",
    "RoutingError",
    "SendError",
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


class SendError(OSError):
    """The socket refused a frame ``Manager.write_frame`` sent.

    Carries the socket's ``errno`` and message (the socket's exception is
    the ``__cause__``), and the path the frame took.

    Attributes:
        was_relay: True when the frame was wrapped for the beacon (relay path).
    """

    def __init__(self, cause: OSError, *, was_relay: bool) -> None:
        super().__init__(cause.errno, cause.strerror or str(cause))
        self.was_relay = was_relay


#: The errno values of an ICMP "unreachable" (port, host or network).
ICMP_UNREACHABLE_ERRNOS = frozenset({errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH})


def is_icmp_unreachable(err: BaseException | None) -> bool:
    """True if ``err`` or an exception it wraps is an ICMP-unreachable error.

    ``ConnectionRefusedError`` or an ``OSError`` with errno ECONNREFUSED,
    EHOSTUNREACH or ENETUNREACH, found through ``__cause__``/``__context__``
    (Go's ``errors.Is`` walk; docs/protocol.md, "ICMP errors"). EAGAIN, ENOBUFS, EMSGSIZE and
    everything else are not.
    """
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, ConnectionRefusedError):
            return True
        if isinstance(err, OSError) and err.errno in ICMP_UNREACHABLE_ERRNOS:
            return True
        err = err.__cause__ or err.__context__
    return False
