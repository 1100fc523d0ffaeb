"""The sidecar's link to the registry: registration, heartbeats and look-ups.

Look-ups run on a fixed pool of worker tasks fed by a queue that only the
engine's :class:`~.lookups.Lookups` fills (within its caps), so the number
of tasks never depends on what arrives from the network (docs/protocol.md,
"Look-ups"). Registry answers become :class:`~.model.PeerInfo`: candidates
from the registry's ``candidates`` list when it has one, else from the older
``endpoint`` (server-reflexive) and ``lan_addrs`` (host) fields.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from natroute._service.tasks import cancel_and_wait
from natroute.registry.client import (
    AsyncRegistryClient,
    RegistryClientError,
    RegistryNotFoundError,
    Resolved,
)
from natroute.routing.addr import format_addr, parse_endpoint
from natroute.routing.types import Addr

from .candidates import MAX_LOCAL_CANDIDATES, MAX_REMOTE_CANDIDATES, Candidate, CandidateKind
from .model import PeerInfo, Transport

__all__ = ["Publication", "RegistryLink", "peer_info"]

_log = logging.getLogger(__name__)


_KINDS = {"host": CandidateKind.HOST, "srflx": CandidateKind.SRFLX}


def peer_info(resolved: Resolved) -> PeerInfo | None:
    """What the engine needs of a resolve answer; None without a frame key.

    Candidates come from the registry's ``candidates`` list when the node
    published one; for older nodes from ``lan_addrs`` (host) and ``endpoint``
    (server-reflexive; a relay-only node's endpoint is a beacon's address and
    is left out).
    """
    if resolved.x25519_public_key is None:
        return None
    candidates: list[Candidate] = []
    seen: set[Addr] = set()

    def add(addr: Addr | None, kind: CandidateKind) -> None:
        if addr is not None and addr not in seen and len(candidates) < MAX_REMOTE_CANDIDATES:
            seen.add(addr)
            candidates.append(Candidate(addr, kind))

    if resolved.candidates:
        for cand in resolved.candidates:
            add(parse_endpoint(cand.addr), _KINDS.get(cand.kind, CandidateKind.SRFLX))
    else:
        for text in resolved.lan_addrs:
            add(parse_endpoint(text), CandidateKind.HOST)
        if not resolved.relay_only:
            add(parse_endpoint(resolved.endpoint), CandidateKind.SRFLX)
    return PeerInfo(
        resolved.node_id,
        resolved.x25519_public_key,
        relay_only=resolved.relay_only,
        candidates=tuple(candidates),
        name=resolved.name or "",
        transport=Transport.STREAM if resolved.transport == "stream" else Transport.UDP,
    )


@dataclass(frozen=True, slots=True)
class Publication:
    """What the node tells the registry about itself."""

    endpoint: Addr | None
    candidates: tuple[Candidate, ...]
    relay_only: bool
    transport: Transport = Transport.UDP
    name: str | None = None

    def wire_candidates(self) -> list[tuple[str, str]]:
        """The registry's form: ``(ip:port, kind)``, host and server-reflexive only."""
        return [
            (format_addr(c.addr), c.kind.value)
            for c in self.candidates
            if c.kind in (CandidateKind.HOST, CandidateKind.SRFLX)
        ][:MAX_LOCAL_CANDIDATES]


class RegistryLink:
    """Registration, heartbeats and the look-up workers of one sidecar.

    Args:
        url: the registry's base URL.
        key: the node's Ed25519 identity key.
        x25519_public: the frame key peers need.
        workers: how many look-ups may run at once.
    """

    def __init__(
        self, url: str, key: Ed25519PrivateKey, x25519_public: bytes, workers: int
    ) -> None:
        self.client = AsyncRegistryClient(url)
        self._key = key
        self._x25519 = x25519_public
        self._queue: asyncio.Queue[int] = asyncio.Queue()
        self._workers = workers
        self._tasks: list[asyncio.Task[None]] = []
        self.registered = False

    # -- registration -----------------------------------------------------------

    async def register(self, pub: Publication) -> int:
        """Register (or re-register) the node; its node ID.

        Raises:
            RegistryClientError: the registry refused or did not answer.
        """
        host = [format_addr(c.addr) for c in pub.candidates if c.kind is CandidateKind.HOST]
        reg = await self.client.register(
            self._key,
            x25519_public_key=self._x25519,
            endpoint=format_addr(pub.endpoint) if pub.endpoint else None,
            lan_addrs=host[:MAX_LOCAL_CANDIDATES],
            relay_only=pub.relay_only,
            candidates=pub.wire_candidates(),
            transport=pub.transport.value,
            name=pub.name,
        )
        self.registered = True
        _log.info("registered", extra={"node_id": reg.node_id, "relay_only": reg.relay_only})
        return reg.node_id

    async def heartbeat(self, node_id: int, pub: Publication) -> None:
        """Keep the entry alive (and current); re-registers after a 404.

        Raises:
            RegistryClientError: the registry refused or did not answer.
        """
        if not self.registered:
            await self.register(pub)
            return
        try:
            await self.client.heartbeat(
                self._key,
                node_id,
                endpoint=format_addr(pub.endpoint) if pub.endpoint else None,
                relay_only=pub.relay_only,
                candidates=pub.wire_candidates(),
                transport=pub.transport.value,
            )
        except RegistryNotFoundError:
            self.registered = False
            await self.register(pub)

    # -- look-ups ---------------------------------------------------------------

    def start(
        self,
        on_found: Callable[[PeerInfo], None],
        on_failed: Callable[[int, bool], None],
    ) -> None:
        """Start the look-up workers; answers go to the callbacks (on the loop)."""

        async def one(node_id: int) -> None:
            try:
                resolved = await self.client.resolve(node_id)
            except RegistryNotFoundError:
                on_failed(node_id, True)
                return
            except RegistryClientError as exc:
                _log.info("resolve_failed", extra={"peer": node_id, "error": str(exc)})
                on_failed(node_id, False)
                return
            info = peer_info(resolved)
            if info is None:
                _log.info("resolve_without_key", extra={"peer": node_id})
                on_failed(node_id, True)
            else:
                on_found(info)

        async def worker() -> None:
            while True:
                node_id = await self._queue.get()
                try:
                    await one(node_id)
                except Exception:  # a bug must not stop the worker; it is logged
                    _log.exception("lookup_failed", extra={"peer": node_id})

        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(worker(), name=f"sidecar-lookup-{i}") for i in range(self._workers)
        ]

    def look_up(self, node_ids: list[int]) -> None:
        """Queue look-ups (the engine already capped how many are in flight)."""
        for node_id in node_ids:
            self._queue.put_nowait(node_id)

    async def close(self) -> None:
        """Stop the workers and close the HTTP client."""
        await cancel_and_wait(self._tasks)
        self._tasks.clear()
        await self.client.aclose()
