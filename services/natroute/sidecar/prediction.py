"""Port prediction: a bounded "birthday" spray for endpoint-dependent ↔ port-restricted pairs.

A node behind an endpoint-dependent ("symmetric", random-port) mapping and a
peer behind an endpoint-independent mapping with port-dependent filtering
cannot meet by checks alone: each side would have to guess the port the
other's NAT picks. Port prediction guesses on purpose (docs/protocol.md,
"Port prediction"; decision D39 in docs/decisions.md):

1. the *hard* side (ours maps per destination) offers a spray through the
   relay (PREDICT OFFER) once its checks went unanswered for ``after`` s;
2. the *easy* side accepts (ACCEPT, naming its endpoint) or declines;
3. the hard side asks the shell for ``sockets`` extra UDP sockets ("spray
   sockets"), sends one authenticated PROBE from each to the easy side's
   endpoint (each opens a random mapping on its NAT) and says GO;
4. the easy side probes up to ``probes`` random ports of the hard side's
   public IP from its peer socket, paced at ``rate`` a second;
5. a probe that lands on one of the mappings reaches a spray socket; the hard
   side answers from it and probes back from it, and both sides nominate
   the pair (reason ``predicted``). The hard side's path is carried by that
   spray socket; every other spray socket is closed.

Everything is bounded: sockets (one spray at a time as the hard side, at
most ``max_kept`` sockets kept for paths), probes and their pace, bytes
(one node-wide budget, apart from the dialling budget), time (``timeout``
per spray), and retries (per-peer backoff). A spray that fails leaves the
pair on the relay with the reason ``prediction_failed``.

The engine stays sans-I/O: a datagram for a spray socket is queued with
that socket's index (:meth:`Prediction.extra_datagrams_to_send`), and the
shell opens and closes the sockets the engine names
(:meth:`Prediction.sockets_to_open`, :meth:`Prediction.sockets_opened`,
:meth:`Prediction.sockets_to_close`). Index 0 is the peer socket.

:class:`Prediction` is mixed into :class:`~.engine.Engine`.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import TYPE_CHECKING

from natroute._service.ratelimit import RateLimit, TokenBuckets
from natroute.routing.addr import canonical_ip, format_addr
from natroute.routing.types import Addr

from .candidates import Candidate, CandidateKind, address_problem
from .frames import InnerType, Predict, PredictPhase, encode_predict, encode_probe
from .model import DropReason, NatType, NodeConfig, PredictConfig
from .peers import Path, PathReason, Peer, PeerEvent, PeerTable

if TYPE_CHECKING:
    from collections import Counter

    from .candidates import SelfAddrs
    from .observer import Observer
    from .peers import CandidateState

__all__ = ["Decline", "PredictCounters", "Prediction", "Role", "Spray", "Stage"]

_log = logging.getLogger(__name__)
_BUDGET_KEY = "*"
#: Seconds the hard side waits past the spray's timeout (the easy side's DONE travels the relay).
_HARD_GRACE = 1.0


class Decline(IntEnum):
    """Why an easy side said no to an offer (the ``count`` of a DECLINE)."""

    DISABLED = 1  # port prediction is off here (or this peer may not go direct)
    BOTH_DEPENDENT = 2  # our mapping is endpoint-dependent too: guessing cannot work
    BUSY = 3  # too many sprays at once, or this peer sprayed with us lately
    NO_ENDPOINT = 4  # we do not know our public endpoint
    BAD_ADDRESS = 5  # the offer names an address that is not the peer's


class Role(Enum):
    """Which side of a spray we are."""

    HARD = "hard"  # our mapping is endpoint-dependent: we open the spray sockets
    EASY = "easy"  # our mapping is endpoint-independent: we probe random ports


class Stage(Enum):
    """Where a spray is."""

    OFFERED = "offered"  # hard: offer sent, waiting for ACCEPT
    OPENING = "opening"  # hard: spray sockets asked of the shell
    SPRAYING = "spraying"  # hard: mappings open, GO sent, waiting for a probe to land
    ACCEPTED = "accepted"  # easy: ACCEPT sent, waiting for GO
    PROBING = "probing"  # easy: probing ports


@dataclass(slots=True)
class Spray:
    """One spray with one peer (at most one per peer)."""

    peer_id: int
    session: int
    role: Role
    stage: Stage
    started_at: float
    deadline: float
    target: Addr | None = None  # hard: the easy side's endpoint; easy: the hard side's IP
    sockets: list[int] = field(default_factory=list)  # hard: spray socket indexes
    ports: list[int] = field(default_factory=list)  # easy: ports still to probe
    sent: dict[Addr, float] = field(default_factory=dict)  # easy: probe send times
    nonce: int = 0
    tokens: float = 0.0
    refilled_at: float = 0.0
    hit: Addr | None = None
    hit_socket: int = 0

    @property
    def label(self) -> str:
        """``role:stage``, as status views show it."""
        return f"{self.role.value}:{self.stage.value}"


@dataclass(slots=True)
class PredictCounters:
    """Node-wide totals of port prediction (both roles)."""

    started: int = 0  # offers sent + offers accepted; each ends succeeded or failed
    succeeded: int = 0
    failed: int = 0
    declined: int = 0  # offers we declined
    ignored: int = 0  # PREDICT frames that matched no spray of ours
    probes_sent: int = 0
    bytes_sent: int = 0  # frame bytes (IP and UDP headers add 28 per datagram)
    sockets_opened: int = 0
    sockets_closed: int = 0


class Prediction:
    """Spray sessions, spray sockets and the spray budget."""

    # provided by the engine
    config: NodeConfig
    peers: PeerTable
    nat_type: NatType
    drops: Counter[DropReason]
    self_addrs: SelfAddrs
    observer: Observer
    _rng: random.Random
    _out: list[tuple[bytes, Addr]]

    if TYPE_CHECKING:

        def _send_relayed(self, peer: Peer, plaintext: bytes, now: float) -> bool: ...

        def _change(
            self, peer: Peer, event: PeerEvent, reason: PathReason, now: float, detail: str = ""
        ) -> None: ...

        def _may_go_direct(self, peer: Peer) -> bool: ...

        def add_remote_candidate(self, peer: Peer, candidate: Candidate, now: float) -> bool: ...

        def nominate(self, peer: Peer, now: float) -> None: ...

        def _emit(
            self, data: bytes, addr: Addr, now: float, peer: int | None = None, via: int = 0
        ) -> bool: ...

    def _init_prediction(self, config: PredictConfig) -> None:
        self.predict = config
        self.sprays: dict[int, Spray] = {}
        #: spray socket index -> the peer it was opened for (asked or open)
        self.spray_sockets: dict[int, int] = {}
        #: spray socket index -> the peer whose direct path it carries
        self.kept_sockets: dict[int, int] = {}
        self.predict_counters = PredictCounters()
        self._spray_budget: TokenBuckets[str] = TokenBuckets(
            RateLimit(config.budget_rate, config.budget_bytes), 1
        )
        self._open_sockets: set[int] = set()
        self._next_socket = 1
        self._to_open: list[int] = []
        self._asked: list[int] = []
        self._to_close: list[int] = []
        self._extra_out: list[tuple[int, bytes, Addr]] = []

    # -- outputs for the shell --------------------------------------------------

    def extra_datagrams_to_send(self) -> list[tuple[int, bytes, Addr]]:
        """``(socket index, data, addr)`` for spray sockets, queued since the last call."""
        out, self._extra_out = self._extra_out, []
        return out

    def sockets_to_open(self) -> list[int]:
        """Indexes of spray sockets to open now; answer with :meth:`sockets_opened`."""
        out, self._to_open = self._to_open, []
        self._asked.extend(out)
        return out

    def sockets_opened(self, opened: Iterable[int], now: float) -> None:
        """The shell opened ``opened`` of the sockets asked for (the rest failed)."""
        ok = set(opened)
        asked, self._asked = self._asked, []
        for index in asked:
            if index in ok and index in self.spray_sockets:
                self._open_sockets.add(index)
                self.predict_counters.sockets_opened += 1
            elif index in ok:
                self._open_sockets.add(index)  # the spray ended meanwhile: close it again
                self.predict_counters.sockets_opened += 1
                self._close_socket(index)
            else:
                self._forget_socket(index)
        for spray in list(self.sprays.values()):
            if spray.stage is Stage.OPENING:
                peer = self.peers.get(spray.peer_id)
                if peer is not None:
                    self._spray(peer, spray, now)

    def sockets_to_close(self) -> list[int]:
        """Indexes of spray sockets the shell should close now."""
        out, self._to_close = self._to_close, []
        return out

    @property
    def spray_sockets_open(self) -> int:
        """Spray sockets open now (spraying or carrying a path)."""
        return len(self._open_sockets)

    def socket_owner(self, index: int) -> int | None:
        """The peer a spray socket belongs to, or None."""
        owner = self.kept_sockets.get(index)
        return owner if owner is not None else self.spray_sockets.get(index)

    # -- sockets ------------------------------------------------------------------

    def _forget_socket(self, index: int) -> None:
        # Only the owner's spray lists the socket, and only the owner's frames are
        # read there, so only the owner (and its candidates) can carry it as ``via``.
        owner = self.socket_owner(index)
        self.spray_sockets.pop(index, None)
        self.kept_sockets.pop(index, None)
        if owner is None:
            return
        spray = self.sprays.get(owner)
        if spray is not None and index in spray.sockets:
            spray.sockets.remove(index)
        peer = self.peers.get(owner)
        if peer is None:
            return
        if peer.via == index:
            peer.via = 0
        for state in peer.candidates.values():
            if state.via == index:
                state.via = 0

    def _close_socket(self, index: int) -> None:
        self._forget_socket(index)
        if index in self._open_sockets:
            self._open_sockets.discard(index)
            self._to_close.append(index)
            self.predict_counters.sockets_closed += 1
        elif index in self._to_open:
            self._to_open.remove(index)

    def release_sockets(self) -> None:
        """Close kept sockets whose peer no longer goes direct through them."""
        for index, node_id in list(self.kept_sockets.items()):
            peer = self.peers.get(node_id)
            if peer is None or peer.path is not Path.DIRECT or peer.via != index:
                self._close_socket(index)

    def _emit_spray(self, data: bytes, addr: Addr, now: float, via: int) -> bool:
        """A spray datagram: never to our own sockets, within the spray budget."""
        if addr in self.self_addrs:
            self.drops[DropReason.SELF_ADDRESSED] += 1
            return False
        if not self._spray_budget.allow(_BUDGET_KEY, now, len(data)):
            self.drops[DropReason.SPRAY_BUDGET] += 1
            return False
        counters = self.predict_counters
        counters.probes_sent += 1
        counters.bytes_sent += len(data)
        if via:
            self._extra_out.append((via, data, addr))
        else:
            self._out.append((data, addr))
        return True

    # -- the hard side --------------------------------------------------------------

    def _spray_target(self, peer: Peer) -> Addr | None:
        for state in peer.candidates.values():
            if state.candidate.kind is CandidateKind.SRFLX:
                return state.addr
        return None

    def _wants_offer(self, peer: Peer, now: float) -> bool:
        cfg = self.predict
        started = peer.window_started_at
        return (
            cfg.enabled
            and self.nat_type is NatType.ENDPOINT_DEPENDENT
            and peer.path is Path.RELAY
            and self._may_go_direct(peer)
            and not peer.relay_only
            and not peer.stream_only
            and now >= peer.predict_next_at
            and started is not None
            and now - started >= cfg.after
            and self.observer.endpoint is not None
            and len(self.kept_sockets) < cfg.max_kept
            and all(s.role is not Role.HARD for s in self.sprays.values())
            and self._spray_target(peer) is not None
        )

    def _offer(self, peer: Peer, now: float) -> None:
        endpoint = self.observer.endpoint
        assert endpoint is not None
        session = self._rng.getrandbits(32) or 1
        offer = Predict(PredictPhase.OFFER, session, self.predict.sockets, (endpoint[0], 0))
        if not self._send_relayed(peer, encode_predict(offer), now):
            return
        self.sprays[peer.node_id] = Spray(
            peer.node_id, session, Role.HARD, Stage.OFFERED, now, now + self.predict.timeout
        )
        self.predict_counters.started += 1
        _log.info("predict_offered", extra={"peer": peer.node_id, "sockets": offer.count})

    def _on_accept(self, peer: Peer, spray: Spray, message: Predict, now: float) -> None:
        target = message.addr
        if target is None or target[1] == 0 or not self._names_peer(peer, target):
            self._spray_failed(peer, spray, "the accept named an address not the peer's", now)
            return
        spray.target = target
        spray.stage = Stage.OPENING
        spray.deadline = now + self.predict.timeout
        first = self._next_socket
        self._next_socket += self.predict.sockets
        spray.sockets = list(range(first, first + self.predict.sockets))
        for index in spray.sockets:
            self.spray_sockets[index] = peer.node_id
        self._to_open.extend(spray.sockets)

    def _spray(self, peer: Peer, spray: Spray, now: float) -> None:
        """Open a mapping from every spray socket towards the easy side, then say GO."""
        target = spray.target
        if not spray.sockets or target is None:
            self._spray_failed(peer, spray, "no spray socket could be opened", now)
            return
        spray.nonce = self._rng.getrandbits(64)
        probe = encode_probe(InnerType.PROBE, spray.nonce)
        for index in list(spray.sockets):
            self._emit_spray(peer.cipher.seal(probe), target, now, index)
        spray.stage = Stage.SPRAYING
        # the easy side's DONE normally ends a miss; the grace covers the relay's delay
        spray.deadline = now + self.predict.timeout + _HARD_GRACE
        go = Predict(PredictPhase.GO, spray.session, len(spray.sockets))
        self._send_relayed(peer, encode_predict(go), now)
        _log.info(
            "predict_spraying",
            extra={
                "peer": peer.node_id,
                "sockets": len(spray.sockets),
                "target": format_addr(target),
            },
        )

    def on_spray_socket_receipt(self, peer: Peer, src: Addr, index: int, now: float) -> None:
        """An authenticated frame of ``peer`` reached spray socket ``index`` from ``src``."""
        state = peer.candidates.get(src)
        if state is None:
            if not self.add_remote_candidate(peer, Candidate(src, CandidateKind.PRFLX), now):
                return
            state = peer.candidates[src]
        state.via = index
        state.predicted = True
        if peer.chosen == src:
            peer.via = index
        spray = self.sprays.get(peer.node_id)
        if spray is None or spray.role is not Role.HARD or spray.hit is not None:
            return
        if index not in spray.sockets:
            return
        spray.hit, spray.hit_socket = src, index
        for other in list(spray.sockets):
            if other != index:
                self._close_socket(other)
        # probe back from the socket that works: its answer nominates the pair
        nonce = self._rng.getrandbits(64)
        if self._emit(peer.cipher.seal(encode_probe(InnerType.PROBE, nonce)), src, now, via=index):
            peer.probes_sent += 1
            state.probes_sent += 1
            peer.remember_probe(nonce, src, now)

    # -- the easy side -----------------------------------------------------------------

    def _names_peer(self, peer: Peer, addr: Addr) -> bool:
        """May we send spray datagrams to ``addr``'s IP for ``peer``? (Only to an IP the
        peer is known at, never to a bad or own address.)"""
        probe_addr = (addr[0], addr[1] or 1)
        if address_problem(probe_addr, allow_loopback=self.config.allow_loopback):
            return False
        if probe_addr in self.self_addrs:
            return False
        ip = canonical_ip(addr[0])
        return any(canonical_ip(a[0]) == ip for a in peer.candidates)

    def _decline_reason(self, peer: Peer, message: Predict, now: float) -> Decline | None:
        if not self.predict.enabled or not self._may_go_direct(peer):
            return Decline.DISABLED
        if self.nat_type is NatType.ENDPOINT_DEPENDENT:
            return Decline.BOTH_DEPENDENT
        if self.observer.endpoint is None:
            return Decline.NO_ENDPOINT
        if message.addr is None or not self._names_peer(peer, message.addr):
            return Decline.BAD_ADDRESS
        probing = sum(1 for s in self.sprays.values() if s.role is Role.EASY)
        if probing >= self.predict.max_probing or now < peer.predict_next_at:
            return Decline.BUSY
        return None

    def _on_offer(self, peer: Peer, message: Predict, now: float) -> None:
        current = self.sprays.get(peer.node_id)
        if current is not None:
            if current.session == message.session:
                return  # a duplicate
            self._spray_failed(peer, current, "superseded by a new offer", now, notify=False)
        reason = self._decline_reason(peer, message, now)
        if reason is not None:
            self.predict_counters.declined += 1
            decline = Predict(PredictPhase.DECLINE, message.session, reason)
            self._send_relayed(peer, encode_predict(decline), now)
            _log.info("predict_declined", extra={"peer": peer.node_id, "why": reason.name.lower()})
            return
        endpoint = self.observer.endpoint
        assert endpoint is not None
        assert message.addr is not None
        accept = Predict(PredictPhase.ACCEPT, message.session, self.predict.probes, endpoint)
        if not self._send_relayed(peer, encode_predict(accept), now):
            return
        self.sprays[peer.node_id] = Spray(
            peer.node_id,
            message.session,
            Role.EASY,
            Stage.ACCEPTED,
            now,
            now + self.predict.timeout,
            target=(message.addr[0], 0),
        )
        self.predict_counters.started += 1

    def _on_go(self, peer: Peer, spray: Spray, now: float) -> None:
        cfg = self.predict
        spray.stage = Stage.PROBING
        spray.deadline = now + cfg.timeout
        span = range(cfg.port_min, cfg.port_max + 1)
        spray.ports = self._rng.sample(span, min(cfg.probes, len(span)))
        spray.nonce = self._rng.getrandbits(64)
        spray.tokens = float(cfg.burst)
        spray.refilled_at = now
        self._probe_ports(peer, spray, now)

    def _probe_ports(self, peer: Peer, spray: Spray, now: float) -> None:
        """Probe as many ports as the pace allows now."""
        cfg = self.predict
        assert spray.target is not None
        spray.tokens = min(
            spray.tokens + (now - spray.refilled_at) * cfg.rate, float(max(cfg.burst, cfg.rate))
        )
        spray.refilled_at = now
        probe = encode_probe(InnerType.PROBE, spray.nonce)
        ip = spray.target[0]
        while spray.ports and spray.tokens >= 1.0:
            addr = (ip, spray.ports.pop())
            spray.tokens -= 1.0
            if not self._emit_spray(peer.cipher.seal(probe), addr, now, 0):
                spray.ports.clear()  # out of budget: this spray stops here
                break
            spray.sent[addr] = now

    def spray_ack(self, peer: Peer, nonce: int, src: Addr, local: int, now: float) -> bool:
        """A PROBE_ACK whose nonce is a spray's: a hit. True when it was one."""
        spray = self.sprays.get(peer.node_id)
        if spray is None or nonce != spray.nonce or spray.hit is not None:
            return False
        if spray.role is Role.HARD:
            if local not in spray.sockets:
                return False
            self.on_spray_socket_receipt(peer, src, local, now)
            return True
        sent_at = spray.sent.get(src)
        if sent_at is None or local:
            return False
        if not self.add_remote_candidate(peer, Candidate(src, CandidateKind.PRFLX), now):
            return True
        state = peer.candidates[src]
        state.predicted = True
        spray.hit = src
        spray.ports.clear()
        state.note_rtt(max(0.0, now - sent_at), now)
        self.nominate(peer, now)
        return True

    def mark_predicted(self, peer: Peer, state: CandidateState) -> None:
        """A peer-reflexive candidate learnt on the peer socket: did our spray find it?"""
        spray = self.sprays.get(peer.node_id)
        if spray is not None and spray.role is Role.EASY and state.addr in spray.sent:
            state.predicted = True

    # -- both sides --------------------------------------------------------------------

    def on_predict(self, peer: Peer, message: Predict, now: float) -> None:
        """An authenticated PREDICT frame of ``peer``."""
        phase = message.phase
        if phase is PredictPhase.OFFER:
            self._on_offer(peer, message, now)
            return
        spray = self.sprays.get(peer.node_id)
        if spray is None or spray.session != message.session:
            self.predict_counters.ignored += 1
            return
        if phase is PredictPhase.ACCEPT and spray.stage is Stage.OFFERED:
            self._on_accept(peer, spray, message, now)
        elif phase is PredictPhase.GO and spray.stage is Stage.ACCEPTED:
            self._on_go(peer, spray, now)
        elif phase is PredictPhase.DECLINE:
            why = Decline(message.count).name.lower() if message.count in _DECLINES else "?"
            self._spray_failed(peer, spray, f"the peer declined ({why})", now, notify=False)
        elif phase is PredictPhase.DONE and spray.role is Role.HARD and spray.hit is None:
            detail = f"the peer's {message.count} probes found no open mapping"
            self._spray_failed(peer, spray, detail, now, notify=False)
        else:
            self.predict_counters.ignored += 1

    def path_nominated(self, peer: Peer, now: float) -> None:
        """The peer's chosen candidate changed: a spray that found it succeeded."""
        spray = self.sprays.get(peer.node_id)
        if spray is None or spray.hit is None or peer.chosen != spray.hit:
            return
        del self.sprays[peer.node_id]
        if spray.role is Role.HARD:
            index = spray.hit_socket
            self.spray_sockets.pop(index, None)
            self.kept_sockets[index] = peer.node_id
            for other in spray.sockets:
                if other != index:
                    self._close_socket(other)
        self.predict_counters.succeeded += 1
        peer.predict_backoff = 0.0
        peer.predict_next_at = now + self.predict.retry_interval
        _log.info(
            "predict_succeeded",
            extra={
                "peer": peer.node_id,
                "role": spray.role.value,
                "addr": format_addr(spray.hit),
                "socket": peer.via,
                "probes": len(spray.sent),
                "took": round(now - spray.started_at, 3),
            },
        )

    def upkeep_prediction(self, peer: Peer, now: float) -> None:
        """One tick of a peer's spray: pace the probes, end it at its deadline, or offer one."""
        spray = self.sprays.get(peer.node_id)
        if spray is not None:
            if spray.stage is Stage.PROBING and spray.ports:
                self._probe_ports(peer, spray, now)
            if now >= spray.deadline:
                self._spray_failed(peer, spray, f"no answer within {self.predict.timeout:g} s", now)
            return
        if self._wants_offer(peer, now):
            self._offer(peer, now)

    def forget_prediction(self, node_id: int) -> None:
        """The peer is gone: its spray and sockets go too."""
        spray = self.sprays.pop(node_id, None)
        if spray is not None:
            self.predict_counters.failed += 1
            for index in list(spray.sockets):
                self._close_socket(index)
        for index, owner in list(self.kept_sockets.items()):
            if owner == node_id:
                self._close_socket(index)

    def _spray_failed(
        self, peer: Peer, spray: Spray, detail: str, now: float, *, notify: bool = True
    ) -> None:
        self.sprays.pop(peer.node_id, None)
        for index in list(spray.sockets):
            self._close_socket(index)
        self.predict_counters.failed += 1
        cfg = self.predict
        peer.predict_backoff = (
            cfg.retry_interval
            if peer.predict_backoff <= 0
            else min(peer.predict_backoff * 2, cfg.retry_max_interval)
        )
        peer.predict_next_at = now + peer.predict_backoff
        if notify and spray.role is Role.EASY and spray.stage is Stage.PROBING:
            done = Predict(PredictPhase.DONE, spray.session, min(len(spray.sent), 0xFFFF))
            self._send_relayed(peer, encode_predict(done), now)
        _log.info(
            "predict_failed",
            extra={
                "peer": peer.node_id,
                "role": spray.role.value,
                "stage": spray.stage.value,
                "detail": detail,
                "retry_in": peer.predict_backoff,
            },
        )
        if peer.path is Path.RELAY and self._may_go_direct(peer):
            self._change(peer, PeerEvent.CHECKS_FAILED, PathReason.PREDICTION_FAILED, now, detail)


_DECLINES = frozenset(int(d) for d in Decline)
