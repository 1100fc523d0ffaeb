"""HTTP client for the registry's beacon endpoints (spec §4.2, HTTP contract).

* ``POST {registry}/v1/beacons`` with ``Authorization: Bearer <token>`` and
  ``{"beacon_id": N, "addr": "host:port", "stream_url": "ws://..."}``
  registers this beacon (the registry forgets it after its TTL, 60 s, so the
  shell repeats every 30 s). ``stream_url`` is optional: a registry that
  does not know the field answers 422, and the client then registers
  without it (and tries it again every :data:`STREAM_URL_RETRY` periods).
* ``GET {registry}/v1/beacons`` → ``{"beacons": [{"id": N, "addr": "..."}]}``
  lists the live beacons.
* ``GET {registry}/v1/nodes/{id}`` → the node's ``ed25519_public_key``
  (standard base64), which a stream hello must be signed with; 404 means
  the registry knows no such (live) node.

Every failure (transport, status, shape) becomes one
:class:`~natroute.routing.errors.RegistryError`; the caller logs it and
retries next period.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Final

import httpx

from natroute.routing.addr import split_host_port
from natroute.routing.errors import RegistryError

__all__ = ["STREAM_URL_RETRY", "RegistryClient", "parse_beacon_entries"]

#: Registrations without ``stream_url`` after a registry refused it, before trying again.
STREAM_URL_RETRY: Final = 20


def parse_beacon_entries(body: Any) -> list[tuple[int, str]]:
    """``(id, addr)`` pairs of a ``GET /v1/beacons`` body, sorted by ID.

    Malformed entries (ID not a u32 > 0, address not ``host:port``) are
    skipped, like the upstream client does (spec §10 D1).

    Raises:
        RegistryError: the body is not an object with a ``beacons`` list.
    """
    if not isinstance(body, dict) or not isinstance(body.get("beacons"), list):
        raise RegistryError("beacon list: unexpected response shape")
    out: list[tuple[int, str]] = []
    for item in body["beacons"]:
        if not isinstance(item, dict):
            continue
        beacon_id, addr = item.get("id"), item.get("addr")
        if type(beacon_id) is not int or not 0 < beacon_id <= 0xFFFFFFFF:
            continue
        if not isinstance(addr, str):
            continue
        try:
            split_host_port(addr)
        except ValueError:
            continue
        out.append((beacon_id, addr))
    out.sort()
    return out


class RegistryClient:
    """Registers this beacon and reads the beacon list over HTTP."""

    def __init__(self, client: httpx.AsyncClient, base_url: str, token: str | None) -> None:
        """Wrap an open ``httpx.AsyncClient`` (the caller owns and closes it).

        Args:
            client: the HTTP client (a real one, or one on an ASGI transport).
            base_url: registry root, e.g. ``http://registry:8000``.
            token: bearer token for registration, or None.
        """
        self._client = client
        self._base = base_url.rstrip("/")
        self._url = self._base + "/v1/beacons"
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._stream_url_skips = 0
        #: False once the registry refused ``stream_url`` (until the next retry).
        self.stream_url_accepted = True

    async def register(self, beacon_id: int, addr: str, stream_url: str | None = None) -> int:
        """Register (or refresh) this beacon, with its stream relay URL if any.

        Returns:
            The TTL the registry granted, in seconds (60 when it names none).

        Raises:
            RegistryError: transport error, non-200 status or a bad body.
        """
        payload: dict[str, Any] = {"beacon_id": beacon_id, "addr": addr}
        body: Any = None
        if stream_url is not None and self._stream_url_skips == 0:
            response = await self._request("POST", payload | {"stream_url": stream_url})
            if response.status_code == 422:
                # An older registry (extra fields are refused): register without it.
                self.stream_url_accepted = False
                self._stream_url_skips = STREAM_URL_RETRY
            else:
                self.stream_url_accepted = True
                body = self._body("POST", response)
        elif self._stream_url_skips:
            self._stream_url_skips -= 1
        if body is None:
            body = self._body("POST", await self._request("POST", payload))
        ttl = body.get("ttl", 60) if isinstance(body, dict) else None
        if type(ttl) is not int or ttl <= 0:
            raise RegistryError("beacon register: unexpected response body")
        return ttl

    async def list_beacons(self) -> list[tuple[int, str]]:
        """The registry's live beacons as ``(id, "host:port")``, sorted by ID.

        Raises:
            RegistryError: transport error, non-200 status or a bad body.
        """
        return parse_beacon_entries(await self._call("GET", None))

    async def node_key(self, node_id: int) -> bytes | None:
        """The node's Ed25519 public key in the registry, or None for an unknown node.

        Raises:
            RegistryError: transport error, a status other than 200 and 404, or
                a body without a 32-byte key.
        """
        url = f"{self._base}/v1/nodes/{int(node_id)}"
        response = await self._request("GET", None, url)
        if response.status_code == 404:
            return None
        body = self._body("GET", response)
        text = body.get("ed25519_public_key") if isinstance(body, dict) else None
        try:
            key = base64.b64decode(text, validate=True) if isinstance(text, str) else b""
        except (binascii.Error, ValueError):
            key = b""
        if len(key) != 32:
            raise RegistryError("node lookup: no valid ed25519_public_key in the answer")
        return key

    async def _call(self, method: str, payload: dict[str, Any] | None) -> Any:
        return self._body(method, await self._request(method, payload))

    async def _request(
        self, method: str, payload: dict[str, Any] | None, url: str | None = None
    ) -> httpx.Response:
        try:
            return await self._client.request(
                method, url or self._url, json=payload, headers=self._headers
            )
        except httpx.HTTPError as exc:
            raise RegistryError(f"registry {method}: {type(exc).__name__}: {exc}") from exc

    @staticmethod
    def _body(method: str, response: httpx.Response) -> Any:
        if response.status_code != 200:
            raise RegistryError(f"registry {method}: HTTP {response.status_code}")
        try:
            return response.json()
        except ValueError as exc:
            raise RegistryError(f"registry {method}: body is not JSON") from exc
