"""Our public endpoint and NAT mapping, from what the beacons observe of the peer socket.

Every Discover the node sends from its peer socket is remembered here with
its send time; a DiscoverReply counts only when it comes from a beacon we
asked within ``reply_window`` seconds (anything else is dropped), and it
gives both an observation (the endpoint that beacon saw) and a round-trip
time. Two rules follow (docs/protocol.md, "Public endpoint and NAT type"):

* **Classification.** A *check* asks two beacons at once; the same endpoint
  from both means endpoint-independent mapping, two different endpoints
  endpoint-dependent mapping, our own address means no NAT. Checks repeat on
  every beacon refresh, so a verdict made from stale state (a NAT entry of an
  earlier run) does not stick; a changed verdict is reported with both sets
  of observations.
* **A changed public endpoint needs confirmation.** The wire format has no
  nonce, so a DiscoverReply can be spoofed with the beacon's source address.
  A reply naming a new endpoint opens a confirmation: the endpoint is
  adopted only after a *later* discover is answered with the same endpoint
  and no answer in between contradicted it. A contradiction rejects the
  change (and is counted).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from enum import Enum
from typing import Final

from natroute.routing.addr import addr_equal, canonical_ip, format_addr
from natroute.routing.types import Addr

from .model import NatType

__all__ = ["EndpointChange", "NatVerdict", "Observer", "Outcome", "classify_nat"]

#: Beacons whose discovers are remembered at once.
_MAX_PENDING: Final = 16


def classify_nat(local: Addr | None, observed: list[Addr]) -> NatType:
    """NAT type from the endpoints the beacons observed for one socket.

    Args:
        local: the socket's own address on the interface towards the beacons.
        observed: what each beacon that answered saw (0, 1 or 2 entries).
    """
    if not observed:
        return NatType.UNKNOWN
    if local is not None and all(addr_equal(o, local) for o in observed):
        return NatType.NONE
    if len(observed) < 2:
        return NatType.UNKNOWN
    if len({(canonical_ip(o[0]), o[1]) for o in observed}) == 1:
        return NatType.ENDPOINT_INDEPENDENT
    return NatType.ENDPOINT_DEPENDENT


class Outcome(Enum):
    """What one DiscoverReply (or the end of a confirmation window) did."""

    IGNORED = "ignored"  # from nobody we asked (spoofed, late, or not a beacon)
    SAME = "same"  # confirms the endpoint we have
    FIRST = "first"  # our first endpoint
    PENDING = "pending"  # a new endpoint, waiting for confirmation
    ADOPTED = "adopted"  # a new endpoint, confirmed
    REJECTED = "rejected"  # a new endpoint, contradicted (or never confirmed)


@dataclass(frozen=True, slots=True)
class EndpointChange:
    """What a reply did to the public endpoint."""

    outcome: Outcome
    old: Addr | None
    new: Addr | None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class NatVerdict:
    """One completed classification check."""

    nat_type: NatType
    observations: dict[str, Addr]
    at: float


@dataclass(slots=True)
class _Check:
    beacons: tuple[str, ...]
    started: float
    seen: dict[str, set[Addr]] = field(default_factory=dict)


@dataclass(slots=True)
class _Confirmation:
    endpoint: Addr
    seen_at: float
    sent_at: float | None = None  # when the confirming discovers went out
    confirmed: bool = False
    contradiction: str = ""


class Observer:
    """Outstanding discovers, observations, the endpoint and the NAT verdict.

    Args:
        reply_window: seconds a discover may take to be answered (also the
            length of a confirmation window).
        local: our own address towards the beacons (for ``NatType.NONE``).
    """

    def __init__(self, reply_window: float = 2.0, local: Addr | None = None) -> None:
        self.reply_window = reply_window
        self.local = local
        self.endpoint: Addr | None = None
        self.verdict: NatVerdict | None = None
        self.rtt: dict[str, float] = {}
        self.last_reply: dict[str, float] = {}
        self.observations: dict[str, Addr] = {}
        self.rejected = 0
        self.inconclusive = 0
        self._pending: OrderedDict[Addr, tuple[str, float]] = OrderedDict()
        self._confirm: _Confirmation | None = None
        self._check: _Check | None = None

    # -- sends ------------------------------------------------------------

    def sent(self, beacon: str, addr: Addr, now: float) -> None:
        """A discover went to ``beacon`` (``host:port`` as listed) at ``addr``."""
        key = (canonical_ip(addr[0]), addr[1])
        self._pending[key] = (beacon, now)
        self._pending.move_to_end(key)
        while len(self._pending) > _MAX_PENDING:
            self._pending.popitem(last=False)

    def start_check(self, beacons: tuple[str, ...], now: float) -> None:
        """A classification check asks ``beacons`` (two) from now on."""
        self._check = _Check(beacons, now)

    @property
    def checking(self) -> bool:
        """Is a classification check waiting for answers?"""
        return self._check is not None

    @property
    def wants_confirmation(self) -> bool:
        """A new endpoint was seen and no confirming discover has gone out yet."""
        return self._confirm is not None and self._confirm.sent_at is None

    @property
    def unconfirmed(self) -> Addr | None:
        """A new endpoint that waits for confirmation, if any."""
        return self._confirm.endpoint if self._confirm is not None else None

    def confirmation_sent(self, now: float) -> None:
        """The confirming discovers went out now; the window runs from here."""
        if self._confirm is not None:
            self._confirm.sent_at = now

    def expecting(self, addr: Addr, now: float) -> bool:
        """Is a reply from ``addr`` expected now?"""
        pending = self._pending.get((canonical_ip(addr[0]), addr[1]))
        return pending is not None and now - pending[1] <= self.reply_window

    # -- replies ----------------------------------------------------------

    def reply(
        self, src: Addr, observed: Addr, now: float
    ) -> tuple[EndpointChange, NatVerdict | None]:
        """Account for a DiscoverReply from ``src`` naming ``observed``.

        Returns:
            What it did to the endpoint, and a verdict when it completed a check.
        """
        key = (canonical_ip(src[0]), src[1])
        pending = self._pending.get(key)
        if pending is None or now - pending[1] > self.reply_window:
            return EndpointChange(Outcome.IGNORED, self.endpoint, None), None
        beacon, sent_at = pending
        self.rtt[beacon] = max(0.0, now - sent_at)
        self.last_reply[beacon] = now
        self.observations[beacon] = observed
        return self._endpoint(observed, sent_at, now), self._check_reply(beacon, observed, now)

    def _endpoint(self, observed: Addr, sent_at: float, now: float) -> EndpointChange:
        old = self.endpoint
        if old is None:
            self.endpoint = observed
            return EndpointChange(Outcome.FIRST, None, observed)
        confirm = self._confirm
        if addr_equal(observed, old):
            if confirm is not None and not confirm.contradiction:
                confirm.contradiction = f"a beacon still sees {format_addr(old)}"
            return EndpointChange(Outcome.SAME, old, old)
        if confirm is None:
            self._confirm = _Confirmation(observed, now)
            return EndpointChange(Outcome.PENDING, old, observed)
        if not addr_equal(observed, confirm.endpoint):
            if not confirm.contradiction:
                first, second = format_addr(confirm.endpoint), format_addr(observed)
                confirm.contradiction = f"beacons answered both {first} and {second}"
        elif confirm.sent_at is not None and sent_at >= confirm.sent_at:
            confirm.confirmed = True
        return EndpointChange(Outcome.PENDING, old, observed)

    def tick(self, now: float) -> EndpointChange | None:
        """End a confirmation window that is over: adopt or reject the new endpoint."""
        confirm = self._confirm
        if confirm is None:
            return None
        started = confirm.sent_at if confirm.sent_at is not None else confirm.seen_at
        if now - started < self.reply_window:
            return None
        self._confirm = None
        old = self.endpoint
        if confirm.confirmed and not confirm.contradiction:
            self.endpoint = confirm.endpoint
            return EndpointChange(Outcome.ADOPTED, old, confirm.endpoint, "confirmed")
        self.rejected += 1
        return EndpointChange(
            Outcome.REJECTED,
            old,
            confirm.endpoint,
            confirm.contradiction or "no confirming answer",
        )

    def _check_reply(self, beacon: str, observed: Addr, now: float) -> NatVerdict | None:
        check = self._check
        if check is None or beacon not in check.beacons:
            return None
        check.seen.setdefault(beacon, set()).add((canonical_ip(observed[0]), observed[1]))
        if len(check.seen) < len(check.beacons):
            return None
        return self._conclude(now)

    def _conclude(self, now: float) -> NatVerdict | None:
        check = self._check
        assert check is not None
        self._check = None
        if any(len(seen) > 1 for seen in check.seen.values()):
            # one beacon answered with two endpoints: someone spoofs replies
            self.inconclusive += 1
            return None
        observed = {beacon: next(iter(seen)) for beacon, seen in check.seen.items()}
        verdict = NatVerdict(classify_nat(self.local, list(observed.values())), observed, now)
        if observed:
            self.verdict = verdict
        return verdict

    def finish_check(self, now: float) -> NatVerdict | None:
        """End a check that did not hear from every beacon (after its timeout).

        Returns:
            A verdict from what did answer (``none`` or ``unknown`` with one
            answer), or None when no check was running or it was inconclusive.
        """
        if self._check is None:
            return None
        return self._conclude(now)
