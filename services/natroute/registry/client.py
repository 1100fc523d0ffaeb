"""Typed clients of the registry's REST API: sync and async, one logic.

Every call is described once in :mod:`.calls` (request builders and response
parsers). :class:`AsyncRegistryClient` (``_async_client.py``) performs them
over ``httpx.AsyncClient``; :class:`RegistryClient` is generated from it by
``.ci/unasync`` (``httpx.Client``, blocking, also a routing ``BeaconLister``).
Every failure — transport, non-2xx answer, unparseable body — is a
:class:`RegistryClientError` (a ``natroute.routing.errors.RegistryError``),
so the refresh tick (docs/protocol.md, "Beacon lists") sees a plain raise.

Typical sidecar use::

    async with AsyncRegistryClient("http://registry:9000") as registry:
        reg = await registry.register(identity_key, x25519_public_key=xpub,
                                      endpoint="203.0.113.7:4000",
                                      candidates=[("10.0.0.7:4000", "host")], name="web-1")
        ...  # every reg.heartbeat_interval seconds:
        await registry.heartbeat(identity_key, reg.node_id, endpoint=...)
        peer = await registry.resolve(other_id)   # RegistryNotFoundError if unknown/expired
"""

from __future__ import annotations

from ._async_client import AsyncRegistryClient
from ._sync_client import RegistryClient
from .calls import (
    Beacon,
    BeaconRegistration,
    Candidate,
    HeartbeatResult,
    Registration,
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
