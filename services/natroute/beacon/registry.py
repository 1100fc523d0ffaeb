"""HTTP client for the registry's beacon endpoints (spec §4.2, HTTP contract).

* ``POST {registry}/v1/beacons`` with ``Authorization: Bearer <token>`` and
  ``{"beacon_id": N, "addr": "host:port"}`` registers this beacon (the
  registry forgets it after its TTL, 60 s, so the shell repeats every 30 s).
* ``GET {registry}/v1/beacons`` → ``{"beacons": [{"id": N, "addr": "..."}]}``
  lists the live beacons.

Every failure (transport, status, shape) becomes one
:class:`~natroute.routing.errors.RegistryError`; the caller logs it and
retries next period.
"""

from __future__ import annotations

from typing import Any

import httpx

from natroute.routing.addr import split_host_port
from natroute.routing.errors import RegistryError

__all__ = ["RegistryClient", "parse_beacon_entries"]


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
        self._url = base_url.rstrip("/") + "/v1/beacons"
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def register(self, beacon_id: int, addr: str) -> int:
        """Register (or refresh) this beacon.

        Returns:
            The TTL the registry granted, in seconds (60 when it names none).

        Raises:
            RegistryError: transport error, non-200 status or a bad body.
        """
        body = await self._call("POST", {"beacon_id": beacon_id, "addr": addr})
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

    async def _call(self, method: str, payload: dict[str, Any] | None) -> Any:
        try:
            response = await self._client.request(
                method, self._url, json=payload, headers=self._headers
            )
        except httpx.HTTPError as exc:
            raise RegistryError(f"registry {method}: {type(exc).__name__}: {exc}") from exc
        if response.status_code != 200:
            raise RegistryError(f"registry {method}: HTTP {response.status_code}")
        try:
            return response.json()
        except ValueError as exc:
            raise RegistryError(f"registry {method}: body is not JSON") from exc
