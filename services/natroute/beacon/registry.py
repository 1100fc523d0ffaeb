"""The beacon's registry link: its registration, the beacon list and node keys.

Every call goes through the registry's own client
(:class:`natroute.registry.client.AsyncRegistryClient`: one HTTP contract,
one parser of each answer; the registry README, "Endpoints"). What this
module adds is the beacon's policy around it:

* ``register`` (re-)registers this beacon with its stream relay URL. The
  registry forgets a beacon after its TTL (60 s), so the shell repeats it
  every 30 s. A registry that does not know ``stream_url`` yet answers 422;
  the beacon then registers without it, and tries it again every
  :data:`STREAM_URL_RETRY` periods.
* ``list_beacons`` gives the live beacons as ``(id, "host:port")`` pairs.
* ``node_key`` gives a node's Ed25519 key for stream hellos, or None when the
  registry knows no such live node.

Every failure (transport, status, shape) is a
:class:`~natroute.routing.errors.RegistryError`; the caller logs it and
retries next period.
"""

from __future__ import annotations

from typing import Final

from natroute.registry.client import AsyncRegistryClient, RegistryClientError

__all__ = ["STREAM_URL_RETRY", "RegistryLink"]

#: Registrations without ``stream_url`` after a registry refused it, before trying again.
STREAM_URL_RETRY: Final = 20
_MAX_NODE_ID: Final = 0xFFFFFFFF


class RegistryLink:
    """Registers this beacon, reads the beacon list and node keys."""

    def __init__(self, client: AsyncRegistryClient, *, can_register: bool = True) -> None:
        """Wrap a registry client (the caller owns and closes it).

        Args:
            client: the registry client.
            can_register: the client holds the operator token that registering
                needs (without it the beacon only reads the list).
        """
        self.client = client
        self.can_register = can_register
        self._stream_url_skips = 0
        #: False once the registry refused ``stream_url`` (until the next retry).
        self.stream_url_accepted = True

    async def register(self, beacon_id: int, addr: str, stream_url: str | None = None) -> int:
        """Register (or refresh) this beacon, with its stream relay URL if any.

        Returns:
            The TTL the registry granted, in seconds.

        Raises:
            RegistryError: transport error, refusal or a bad answer.
        """
        if stream_url is not None and self._stream_url_skips == 0:
            try:
                registration = await self.client.register_beacon(beacon_id, addr, stream_url)
            except RegistryClientError as exc:
                if exc.status != 422:
                    raise
                # An older registry (extra fields are refused): register without it.
                self.stream_url_accepted = False
                self._stream_url_skips = STREAM_URL_RETRY
            else:
                self.stream_url_accepted = True
                return registration.ttl
        elif self._stream_url_skips:
            self._stream_url_skips -= 1
        return (await self.client.register_beacon(beacon_id, addr)).ttl

    async def list_beacons(self) -> list[tuple[int, str]]:
        """The registry's live beacons as ``(id, "host:port")``, ordered by ID.

        Raises:
            RegistryError: transport error, refusal or a bad answer.
        """
        return sorted((b.id, b.addr) for b in await self.client.beacons())

    async def node_key(self, node_id: int) -> bytes | None:
        """The node's Ed25519 public key in the registry, or None for an unknown node.

        Raises:
            RegistryError: transport error, a refusal other than "not found",
                or an answer without a valid key.
        """
        if not 0 < node_id <= _MAX_NODE_ID:
            return None
        try:
            return (await self.client.resolve(node_id)).ed25519_public_key
        except RegistryClientError as exc:
            if exc.not_found:
                return None
            raise
