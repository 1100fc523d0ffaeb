"""``natroute-probe``: first delivery and one-way delay to every peer, in milliseconds.

An application for a sidecar's data plane, like ``natroute-demo``, built to
measure: it sends every live node (listed by the registry's operator
endpoint) a small timestamped datagram, often while the peer is new
(``--interval`` for ``--burst`` seconds) and then every ``--slow-interval``,
and it notes when each peer's first datagram arrives. The timestamps are
``CLOCK_MONOTONIC`` readings: processes on one host (containers included)
share that clock, so send and receive times compare across them.

Log events (JSON lines, see :mod:`natroute._service.logging`):

- ``probe_started``: ``node_id``;
- ``probe_first_send``: once per peer: ``dst`` and ``at`` (monotonic
  seconds), when the probe first sent to it;
- ``probe_first_delivery``: once per source node: ``src``, ``seq`` (the
  sender's sequence number: 0 means nothing before it was lost), ``sent_at``
  and ``recv_at`` (monotonic seconds), ``delay_ms``;
- ``probe_report`` every ``--report-interval``: datagrams sent and received
  per source, and each source's lowest one-way delay.

:class:`ProbeCore` decides and records (fed ``now``, no I/O); :class:`Probe`
is the asyncio shell. Settings: flags, env ``NATROUTE_PROBE_*`` or a config
file (:mod:`natroute._service.cli`).
"""

from __future__ import annotations

import asyncio
import logging
import struct
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from natroute._service.cli import service_main
from natroute._service.run import wait_for_signal
from natroute._service.settings import Seconds
from natroute._service.tasks import run_until
from natroute.registry.client import AsyncRegistryClient, RegistryClientError

from .demo import AppSettings, app_session, bind_app

__all__ = [
    "PROBE_MAGIC",
    "FirstDelivery",
    "Probe",
    "ProbeCore",
    "ProbeSettings",
    "decode_probe",
    "encode_probe",
    "main",
]

_log = logging.getLogger(__name__)

#: First bytes of every probe payload.
PROBE_MAGIC = b"NRPROBE1"
_BODY = struct.Struct("!IQ")  # sequence number, send time in monotonic nanoseconds
#: Payload length: magic, sequence, timestamp.
PROBE_LEN = len(PROBE_MAGIC) + _BODY.size
#: Most peers the probe sends to or keeps figures for (the registry's list is capped too).
MAX_PEERS = 4096


def encode_probe(seq: int, sent_at: float) -> bytes:
    """A probe payload: magic, sequence number, ``sent_at`` (monotonic seconds)."""
    return PROBE_MAGIC + _BODY.pack(seq & 0xFFFFFFFF, max(0, round(sent_at * 1e9)))


def decode_probe(payload: bytes) -> tuple[int, float]:
    """Inverse of :func:`encode_probe`: ``(seq, sent_at)``.

    Raises:
        ValueError: not a probe payload.
    """
    if len(payload) != PROBE_LEN or not payload.startswith(PROBE_MAGIC):
        raise ValueError("not a probe datagram")
    seq, sent_ns = _BODY.unpack_from(payload, len(PROBE_MAGIC))
    return seq, sent_ns / 1e9


@dataclass(frozen=True, slots=True)
class FirstDelivery:
    """The first datagram that arrived from one source node."""

    src: int
    seq: int
    sent_at: float
    recv_at: float

    @property
    def delay_ms(self) -> float:
        """One-way delay in milliseconds."""
        return (self.recv_at - self.sent_at) * 1000.0


@dataclass
class _Sending:
    first_seen: float
    next_at: float
    seq: int = 0


@dataclass
class _Receiving:
    first: FirstDelivery
    count: int = 0
    min_delay: float = float("inf")


@dataclass
class ProbeCore:
    """What to send when, and what arrived; fed ``now`` (monotonic seconds).

    A peer new to the list is sent to every ``interval`` for ``burst`` seconds,
    then every ``slow_interval``.
    """

    interval: float = 0.1
    burst: float = 10.0
    slow_interval: float = 1.0
    max_peers: int = MAX_PEERS
    sent: int = 0
    dropped: int = 0
    _peers: dict[int, _Sending] = field(default_factory=dict)
    _received: dict[int, _Receiving] = field(default_factory=dict)

    @property
    def peers(self) -> list[int]:
        """The node IDs sent to."""
        return list(self._peers)

    def set_peers(self, peers: Iterable[int], now: float) -> None:
        """Replace the peer list; a new peer is due at once (at most ``max_peers``)."""
        wanted = list(dict.fromkeys(peers))[: self.max_peers]
        self._peers = {p: self._peers.get(p) or _Sending(now, now) for p in wanted}

    def due(self, now: float) -> list[tuple[int, bytes]]:
        """The datagrams to send at ``now``: (peer, payload)."""
        out = []
        for peer, state in self._peers.items():
            if state.next_at > now:
                continue
            out.append((peer, encode_probe(state.seq, now)))
            state.seq += 1
            fast = now - state.first_seen < self.burst
            state.next_at = now + (self.interval if fast else self.slow_interval)
        self.sent += len(out)
        return out

    def next_due(self) -> float | None:
        """When the next datagram is due (None: no peers)."""
        return min((s.next_at for s in self._peers.values()), default=None)

    def received(self, src: int, payload: bytes, now: float) -> FirstDelivery | None:
        """Record a delivery; the :class:`FirstDelivery` when it is ``src``'s first.

        Anything that is not a probe datagram, and sources beyond ``max_peers``,
        are counted in ``dropped`` and otherwise ignored.
        """
        try:
            seq, sent_at = decode_probe(payload)
        except ValueError:
            self.dropped += 1
            return None
        state = self._received.get(src)
        first = None
        if state is None:
            if len(self._received) >= self.max_peers:
                self.dropped += 1
                return None
            first = FirstDelivery(src, seq, sent_at, now)
            state = self._received[src] = _Receiving(first)
        state.count += 1
        state.min_delay = min(state.min_delay, now - sent_at)
        return first

    def report(self) -> dict[str, object]:
        """Counters for the ``probe_report`` log line."""
        return {
            "peers": len(self._peers),
            "sent": self.sent,
            "dropped": self.dropped,
            "received": {str(k): v.count for k, v in sorted(self._received.items())},
            "min_delay_ms": {
                str(k): round(v.min_delay * 1000.0, 3) for k, v in sorted(self._received.items())
            },
            "heard_from": len(self._received),
        }


class ProbeSettings(AppSettings):
    """Settings of the probe application (env ``NATROUTE_PROBE_<FIELD>``, flag ``--<field>``)."""

    model_config = SettingsConfigDict(env_prefix="NATROUTE_PROBE_")

    interval: Seconds = Field(0.1, gt=0, description="seconds between sends to a new peer")
    burst: Seconds = Field(10.0, ge=0, description="seconds a peer counts as new")
    slow_interval: Seconds = Field(1.0, gt=0, description="seconds between sends afterwards")
    peer_refresh_interval: Seconds = Field(0.5, gt=0, description="seconds between node lists")
    report_interval: Seconds = Field(5.0, gt=0, description="seconds between reports")


class Probe:
    """The asyncio shell around :class:`ProbeCore`."""

    def __init__(
        self, settings: ProbeSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.core = ProbeCore(settings.interval, settings.burst, settings.slow_interval)
        self.app = bind_app(settings)
        self.node_id = 0

    async def _peers_loop(self, registry: AsyncRegistryClient) -> None:
        while True:
            try:
                nodes = await registry.nodes()
            except RegistryClientError as exc:
                _log.warning("probe_registry_failed", extra={"error": str(exc)})
            else:
                ids = [n.node_id for n in nodes if n.node_id != self.node_id]
                self.core.set_peers(ids, self.clock())
            await asyncio.sleep(self.settings.peer_refresh_interval)

    async def _send_loop(self) -> None:
        started: set[int] = set()
        while True:
            for peer, payload in self.core.due(self.clock()):
                await self.app.send(peer, payload)
                if peer not in started and len(started) < MAX_PEERS:
                    started.add(peer)
                    _log.info("probe_first_send", extra={"dst": peer, "at": round(self.clock(), 6)})
            due = self.core.next_due()
            wait = self.settings.peer_refresh_interval if due is None else due - self.clock()
            await asyncio.sleep(max(0.001, wait))

    async def _recv_loop(self) -> None:
        while True:
            src, payload = await self.app.recv()
            first = self.core.received(src, payload, self.clock())
            if first is not None:
                _log.info(
                    "probe_first_delivery",
                    extra={
                        "src": first.src,
                        "seq": first.seq,
                        "sent_at": round(first.sent_at, 6),
                        "recv_at": round(first.recv_at, 6),
                        "delay_ms": round(first.delay_ms, 3),
                    },
                )

    async def _report_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.report_interval)
            _log.info("probe_report", extra={"node_id": self.node_id, **self.core.report()})

    async def run(self, until: Awaitable[object]) -> None:
        """Probe until ``until`` completes."""
        s = self.settings
        async with app_session(s.admin_url, s.registry_url, s.registry_token, self.app) as session:
            self.node_id, registry = session
            _log.info("probe_started", extra={"node_id": self.node_id})
            loops = (self._send_loop(), self._recv_loop(), self._report_loop())
            await run_until(until, self._peers_loop(registry), *loops)


async def serve(settings: ProbeSettings) -> None:
    """Run the probe until SIGINT or SIGTERM.

    Raises:
        StartupError: its socket cannot be bound.
    """
    await Probe(settings).run(wait_for_signal())


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point; 2 for settings that cannot be used."""
    return service_main(
        ProbeSettings,
        argv,
        prog="natroute-probe",
        description="natroute probe: the first delivery and the one-way delay to every "
        "live node, through its sidecar, in milliseconds.",
        serve=serve,
    )


if __name__ == "__main__":
    sys.exit(main())
