"""natroute registry: node identities, resolve and the beacon list.

What nodes rely on: docs/protocol.md, "The registry as nodes see it"; the
whole API: this package's README.

Service modules: ``store`` (the storage interface and its rules) with the
``sqlite`` and ``postgres`` backends, ``app`` and ``routes`` (the FastAPI
shell), ``main`` (``natroute-registry``). Clients for other components are
re-exported here.
"""

from __future__ import annotations

from .client import (
    AsyncRegistryClient,
    Beacon,
    BeaconRegistration,
    Candidate,
    HeartbeatResult,
    Registration,
    RegistryClient,
    RegistryClientError,
    RegistryNotFoundError,
    RelayOnlyState,
    Resolved,
)

__all__ = [
    "AsyncRegistryClient",
    "Beacon",
    "BeaconRegistration",
    "Candidate",
    "HeartbeatResult",
    "Registration",
    "RegistryClient",
    "RegistryClientError",
    "RegistryNotFoundError",
    "RelayOnlyState",
    "Resolved",
]
