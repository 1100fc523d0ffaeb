"""The blocking registry client, generated from ``_async_client.py``.

Written by ``.ci/unasync``; edit ``_async_client.py`` and run it again (a
test fails when this file is out of date).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .calls import (
    DEFAULT_TIMEOUT,
    Beacon,
    BeaconRegistration,
    Call,
    Calls,
    HeartbeatResult,
    Registration,
    RelayOnlyState,
    Resolved,
    transport_error,
)

__all__ = ["RegistryClient"]

T = TypeVar("T")


class RegistryClient:
    """A blocking registry client on ``httpx.Client``.

    ``send`` answers the seed's untyped ``beacon_list`` request; this
    client is therefore a routing ``BeaconLister``.

    Args:
        base_url: e.g. ``http://registry:9000``.
        token: operator bearer token, needed only for operator calls and
            ``register_beacon``.
        timeout: seconds per request.
        transport: an httpx transport to use instead of the network (tests).
        clock: wall clock (Unix seconds) used for signature timestamps.
        http: an open ``httpx.Client`` to send through instead of one of
            our own (``timeout`` and ``transport`` are then its business, and
            closing it is the caller's).
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.time,
        http: httpx.Client | None = None,
    ) -> None:
        self._calls = Calls(token, clock)
        self._base = base_url.rstrip("/")
        self._owns_http = http is None
        self._http = (
            http if http is not None else httpx.Client(timeout=timeout, transport=transport)
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the underlying connection pool (unless it was given to us)."""
        if self._owns_http:
            self._http.close()

    def _run(self, call: Call[T]) -> T:
        args = self._calls.request_args(call, self._base)
        try:
            response = self._http.request(**args)
        except httpx.HTTPError as exc:
            raise transport_error(exc) from exc
        return self._calls.finish(call, response)

    def send(self, msg: dict[str, Any], /) -> dict[str, Any]:
        """The seed's BeaconLister: ``{"type": "beacon_list"}`` → ``beacon_list_ok``.

        natroute callers use the typed :meth:`beacons` instead.

        The answer is ``{"type": "beacon_list_ok", "beacons": [{"id", "addr",
        "stream_url"?}, ...]}``.

        Raises:
            RegistryClientError: any other message type, or the call failed.
        """
        return self._run(self._calls.beacon_list_message(msg))

    def register(
        self,
        identity_private_key: Ed25519PrivateKey,
        *,
        x25519_public_key: bytes | None = None,
        endpoint: str | None = None,
        lan_addrs: Sequence[str] = (),
        relay_only: bool = False,
        candidates: Sequence[tuple[str, str]] = (),
        transport: str = "udp",
        name: str | None = None,
    ) -> Registration:
        """Register (or re-register) this node; the same key always gets the same ID.

        Re-registering replaces every field, so ``relay_only=False`` clears a
        previous self-set mark, and leaving ``name`` out drops the name.

        Args:
            identity_private_key: the node's Ed25519 key (signs the request).
            x25519_public_key: the node's 32-byte X25519 key, published to peers.
            endpoint: public ``ip:port``.
            lan_addrs: LAN ``ip:port`` addresses (at most 16).
            relay_only: peers should start on the relay.
            candidates: ``(addr, kind)`` pairs, kind ``host`` or ``srflx`` (at most 8).
            transport: ``udp``, or ``stream`` when attached to the beacon over TCP.
            name: a lower-case DNS label, unique among live nodes.

        Raises:
            RegistryClientError: refused (``code``: ``invalid_request``,
                ``bad_signature``, ``clock_skew``, ``replayed``, ``name_taken``,
                ``rate_limited``) or failed.
            UsageError: ``x25519_public_key`` is not 32 bytes.
        """
        call = self._calls.register(
            identity_private_key,
            x25519_public_key,
            endpoint,
            lan_addrs,
            relay_only,
            candidates,
            transport,
            name,
        )
        return self._run(call)

    def heartbeat(
        self,
        identity_private_key: Ed25519PrivateKey,
        node_id: int,
        *,
        endpoint: str | None = None,
        relay_only: bool | None = None,
        candidates: Sequence[tuple[str, str]] | None = None,
        transport: str | None = None,
    ) -> HeartbeatResult:
        """Keep ``node_id`` alive; ``None`` arguments leave stored values alone.

        A ``candidates`` list replaces the stored one (``[]`` clears it).

        Raises:
            RegistryNotFoundError: the node must register again.
            RegistryClientError: any other refusal or failure.
        """
        call = self._calls.heartbeat(
            identity_private_key, node_id, endpoint, relay_only, candidates, transport
        )
        return self._run(call)

    def resolve(self, node_id: int) -> Resolved:
        """Look a live node up (docs/protocol.md, "The registry as nodes see it").

        Raises:
            RegistryNotFoundError: unknown, deleted or expired.
            RegistryClientError: any other failure.
        """
        return self._run(self._calls.resolve(node_id))

    def resolve_name(self, name: str) -> Resolved:
        """Look up the live node registered under ``name``.

        Raises:
            RegistryNotFoundError: no live node has that name.
            RegistryClientError: any other failure.
            UsageError: ``name`` is not a lower-case DNS label.
        """
        return self._run(self._calls.resolve_name(name))

    def beacons(self) -> list[Beacon]:
        """The live beacons, ordered by ID."""
        return self._run(self._calls.beacons())

    def nodes(self, limit: int = 1000) -> list[Resolved]:
        """Operator: the live nodes, by ID (at most ``limit``)."""
        return self._run(self._calls.nodes(limit))

    def register_beacon(
        self, beacon_id: int, addr: str, stream_url: str | None = None
    ) -> BeaconRegistration:
        """(Re-)register a beacon (operator token); ``stream_url``: its ws(s):// relay."""
        return self._run(self._calls.register_beacon(beacon_id, addr, stream_url))

    def set_relay_only(self, node_id: int, force: bool | None) -> RelayOnlyState:
        """Operator: force ``relay_only`` on/off, or ``None`` to clear the force."""
        return self._run(self._calls.set_relay_only(node_id, force))

    def delete_node(self, node_id: int) -> None:
        """Operator: drop a node's record (its ID stays reserved for its key)."""
        self._run(self._calls.delete_node(node_id))
