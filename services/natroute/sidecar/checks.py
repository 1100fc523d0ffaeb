"""Connectivity checks: probe a peer's candidates, nominate the best, keep it honest.

This is the half of the engine that decides direct paths (docs/protocol.md,
"Candidates and checks"). A *check window* opens when a peer is first seen,
when its CALL_ME_MAYBE arrives, when an operator asks, and on a schedule
(backoff while relayed, periodic re-evaluation while direct). During a
window every candidate gets a PROBE each ``check_interval``; the first
authenticated PROBE_ACK makes the pair direct, and for ``nominate_window``
more seconds a faster candidate may still win (a LAN address beats the
public one). A window that ends unanswered leaves the peer on the relay with
a reason that says why.

While direct, the chosen address gets a PROBE every ``keepalive_interval``:
its answers measure the RTT, and ``one_way_rounds`` unanswered in a row while
the peer's frames still arrive directly is a one-way path, moved to the
relay. While relayed, the same PROBE goes through the beacon (relay RTT and
liveness).

:class:`Checks` is mixed into :class:`~.engine.Engine`; it only uses the
engine's send helpers and the Manager, and never touches a socket.
"""

from __future__ import annotations

import contextlib
import random
from typing import TYPE_CHECKING

from natroute.routing.addr import format_addr
from natroute.routing.manager import Manager
from natroute.routing.types import Addr

from .candidates import Candidate, CandidateKind, address_problem
from .frames import InnerType, encode_call_me_maybe, encode_probe
from .model import DropReason, NatType, NodeConfig, Transport
from .peers import RELAY_PATH, CandidateState, Path, PathReason, Peer, PeerEvent, PeerTable

if TYPE_CHECKING:
    from collections import Counter

    from .candidates import SelfAddrs

__all__ = ["Checks"]

#: Least time between two CALL_ME_MAYBE to one peer (the answer to ours must not
#: trigger another one).
_CMM_MIN_INTERVAL = 1.0


class Checks:
    """Check windows, nomination, keepalive probes and the one-way detector."""

    # provided by the engine
    manager: Manager
    config: NodeConfig
    peers: PeerTable
    nat_type: NatType
    transport: Transport
    local_candidates: list[Candidate]
    drops: Counter[DropReason]
    path_changes: Counter[PathReason]
    self_addrs: SelfAddrs
    _rng: random.Random

    def _emit(
        self, data: bytes, addr: Addr, now: float, peer: int | None = None, via: int = 0
    ) -> bool:
        raise NotImplementedError

    if TYPE_CHECKING:  # port prediction's hooks (:class:`~.prediction.Prediction`)

        def spray_ack(self, peer: Peer, nonce: int, src: Addr, local: int, now: float) -> bool: ...

        def path_nominated(self, peer: Peer, now: float) -> None: ...

        def mark_predicted(self, peer: Peer, state: CandidateState) -> None: ...

    def _send_relayed(self, peer: Peer, plaintext: bytes, now: float) -> bool:
        raise NotImplementedError

    def _change(
        self, peer: Peer, event: PeerEvent, reason: PathReason, now: float, detail: str = ""
    ) -> None:
        raise NotImplementedError

    # -- candidates ---------------------------------------------------------

    def _may_go_direct(self, peer: Peer) -> bool:
        return not (
            peer.pinned_by_operator or self.config.force_relay or self.transport is Transport.STREAM
        )

    def add_remote_candidate(self, peer: Peer, candidate: Candidate, now: float) -> bool:
        """Validate and remember a candidate of ``peer``; False when refused."""
        if (
            address_problem(candidate.addr, allow_loopback=self.config.allow_loopback)
            or candidate.addr in self.self_addrs
        ):
            self.drops[DropReason.BAD_CANDIDATE] += 1
            return False
        known = candidate.addr in peer.candidates
        before = set(peer.candidates)
        state = peer.add_candidate(candidate, now)
        if state is None:
            self.drops[DropReason.BAD_CANDIDATE] += 1
            return False
        for gone in before - set(peer.candidates):
            self.peers.unindex(peer, gone)
        if not known:
            self.peers.index(peer, candidate.addr)
        return True

    # -- windows ------------------------------------------------------------

    def start_checks(self, peer: Peer, now: float, *, call_me_maybe: bool = True) -> None:
        """Open a check window now (unless direct paths are ruled out for this peer)."""
        if not self._may_go_direct(peer):
            return
        cfg = self.config
        peer.check_until = now + cfg.check_window
        peer.window_started_at = now
        peer.next_check_at = None
        peer.probe_rounds = 0
        if call_me_maybe and (
            peer.last_cmm_sent is None or now - peer.last_cmm_sent >= _CMM_MIN_INTERVAL
        ):
            peer.last_cmm_sent = now
            self._send_relayed(peer, encode_call_me_maybe(self.local_candidates), now)
        if peer.path is Path.RELAY:
            # the beacon's punch coordination too, for peers that only know it; a
            # refused or failed send is counted by the sender
            with contextlib.suppress(OSError):
                self.manager.request_hole_punch(peer.node_id)
        self._probe_round(peer, now)

    def _probe_round(self, peer: Peer, now: float) -> None:
        # rounds grow apart (interval/2, interval, 2x, 4x, 4x ...): quick while both
        # sides open their NATs, then sparse, so an address that never answers costs
        # a handful of probes per window
        step = self.config.check_interval * min(2.0 ** (peer.probe_rounds - 1), 4.0)
        peer.probe_rounds += 1
        peer.next_probe_at = now + step
        for state in list(peer.candidates.values()):
            if state.failed_at is not None and now - state.failed_at < self.config.check_window:
                continue
            nonce = self._rng.getrandbits(64)
            frame = peer.cipher.seal(encode_probe(InnerType.PROBE, nonce))
            if self._emit(frame, state.addr, now, peer.node_id, state.via):
                state.probes_sent += 1
                peer.probes_sent += 1
                peer.remember_probe(nonce, state.addr, now)

    def _end_window(self, peer: Peer, now: float) -> None:
        peer.check_until = None
        cfg = self.config
        if peer.path is Path.DIRECT:
            peer.next_check_at = now + cfg.reevaluate_interval
            return
        peer.backoff = (
            cfg.probe_initial_interval
            if peer.backoff <= 0
            else min(peer.backoff * 2, cfg.probe_max_interval)
        )
        peer.next_check_at = now + peer.backoff
        if peer.reason not in (PathReason.CHECKING, PathReason.NO_CANDIDATES, PathReason.NO_UDP):
            return  # keep the reason that moved it to the relay (blackhole, one-way, ...)
        reason, detail = self._failure_reason(peer)
        if peer.reason is not reason:
            self._change(peer, PeerEvent.CHECKS_FAILED, reason, now, detail)

    def _failure_reason(self, peer: Peer) -> tuple[PathReason, str]:
        tried = ", ".join(
            f"{s.candidate.kind.value} {format_addr(s.addr)}" for s in peer.candidates.values()
        )
        detail = f"no answer from {tried}" if tried else "no candidate to probe"
        if peer.stream_only:
            return PathReason.NO_UDP, "the peer reaches its beacon over a stream"
        if peer.relay_only:
            return PathReason.RELAY_ONLY, detail
        if self.nat_type is NatType.ENDPOINT_DEPENDENT:
            return PathReason.LOCAL_SYMMETRIC_NAT, detail
        if not peer.candidates:
            return PathReason.NO_CANDIDATES, "the peer published no candidate"
        return PathReason.CHECKS_FAILED, detail

    # -- answers ------------------------------------------------------------

    def on_probe_ack(
        self, peer: Peer, nonce: int, src: Addr, relayed: bool, now: float, local: int = 0
    ) -> None:
        """An authenticated PROBE_ACK: an RTT sample, and maybe a (better) direct path."""
        entry = peer.outstanding.pop(nonce, None)
        if entry is None:
            if not relayed:
                self.spray_ack(peer, nonce, src, local, now)
            return  # an answer to a probe we no longer remember (or a duplicate)
        where, sent_at = entry
        sample = max(0.0, now - sent_at)
        if where == RELAY_PATH:
            peer.relay_rtt = (
                sample if peer.relay_rtt is None else peer.relay_rtt + (sample - peer.relay_rtt) / 8
            )
            peer.ping_results.append((nonce, "relay", sample))
            return
        if relayed:
            return  # a direct probe answered through the relay proves nothing direct
        state = peer.candidates.get(where)
        if state is None:
            return
        state.note_rtt(sample, now)
        peer.ping_results.append((nonce, "direct", sample))
        if nonce == peer.keepalive_nonce:
            peer.keepalive_nonce = None
            peer.unanswered = 0
        self.nominate(peer, now)

    def nominate(self, peer: Peer, now: float) -> None:
        """Use the best answering candidate (relay → direct, or a better direct one)."""
        cfg = self.config
        best = peer.best_candidate(since=now - cfg.reevaluate_interval - cfg.check_window)
        if best is None or not self._may_go_direct(peer):
            return
        detail = (
            f"{best.candidate.kind.value} {format_addr(best.addr)} "
            f"rtt {(best.rtt or 0.0) * 1000:.1f}ms"
        )
        if peer.path is Path.RELAY:
            was_direct = any(e.path is Path.DIRECT for e in peer.events)
            peer.chosen = best.addr
            peer.via = best.via
            self.manager.set_relay_peer_pinned(peer.node_id, False)
            if best.predicted:
                reason = PathReason.PREDICTED
            else:
                reason = PathReason.DIRECT_RESTORED if was_direct else PathReason.CHECKED
            self._change(peer, PeerEvent.CHECK_SUCCEEDED, reason, now, detail)
            self.path_nominated(peer, now)
            peer.backoff = 0.0
            peer.unanswered = 0
            peer.keepalive_nonce = None
            peer.next_keepalive_at = now + self.config.keepalive_interval
            if peer.check_until is not None:
                peer.check_until = min(peer.check_until, now + self.config.nominate_window)
            else:
                peer.next_check_at = now + self.config.reevaluate_interval
            return
        if best.addr == peer.chosen:
            return
        current = peer.candidates.get(peer.chosen) if peer.chosen is not None else None
        if (
            current is None
            or current.rtt is None
            or current.failed_at is not None
            or peer.unanswered > 0
            or (best.rtt or 0.0) < current.rtt * self.config.better_path_ratio
        ):
            peer.chosen = best.addr
            peer.via = best.via
            self._change(peer, PeerEvent.SWITCH, PathReason.BETTER_PATH, now, detail)
            self.path_nominated(peer, now)

    def on_call_me_maybe(self, peer: Peer, candidates: list[Candidate], now: float) -> None:
        """The peer's candidates, and its request to probe them now."""
        for candidate in candidates:
            self.add_remote_candidate(peer, candidate, now)
        if peer.check_until is None:
            self.start_checks(peer, now, call_me_maybe=True)

    def learn_peer_reflexive(self, peer: Peer, src: Addr, now: float) -> None:
        """An authenticated frame came straight from ``src`` (to the peer socket):
        it is a candidate."""
        if src in peer.candidates:
            return
        if not self.add_remote_candidate(peer, Candidate(src, CandidateKind.PRFLX), now):
            return
        self.mark_predicted(peer, peer.candidates[src])
        if peer.check_until is None and peer.path is Path.RELAY:
            self.start_checks(peer, now, call_me_maybe=False)

    # -- periodic -----------------------------------------------------------

    def upkeep_paths(self, peer: Peer, now: float) -> None:
        """One tick of a peer's checks, keepalive probes and heuristics."""
        if peer.path is Path.DIRECT and self.manager.is_relay_peer(peer.node_id):
            # the Manager flipped it outside our writes (its blackhole check)
            self._to_relay(peer, PeerEvent.HEURISTIC, PathReason.BLACKHOLE, now)
        if peer.check_until is not None:
            if now >= peer.check_until:
                self._end_window(peer, now)
            elif now >= peer.next_probe_at:
                self._probe_round(peer, now)
        elif peer.next_check_at is not None and now >= peer.next_check_at:
            self.start_checks(peer, now)
        if now >= peer.next_keepalive_at:
            peer.next_keepalive_at = now + self.config.keepalive_interval
            self._keepalive_probe(peer, now)

    def _keepalive_probe(self, peer: Peer, now: float) -> None:
        nonce = self._rng.getrandbits(64)
        plaintext = encode_probe(InnerType.PROBE, nonce)
        if peer.path is Path.DIRECT and peer.chosen is not None:
            if peer.keepalive_nonce is not None:
                peer.unanswered += 1
                if peer.unanswered >= self.config.one_way_rounds and self._hears_directly(
                    peer, now
                ):
                    self._to_relay(
                        peer,
                        PeerEvent.ONE_WAY,
                        PathReason.ONE_WAY,
                        now,
                        f"{peer.unanswered} probes to {format_addr(peer.chosen)} unanswered",
                    )
                    return
            self.manager.maybe_flip_blackhole(peer.node_id)
            if self.manager.is_relay_peer(peer.node_id):
                self._to_relay(peer, PeerEvent.HEURISTIC, PathReason.BLACKHOLE, now)
                return
            if self._emit(peer.cipher.seal(plaintext), peer.chosen, now, via=peer.via):
                peer.keepalive_nonce = nonce
                peer.probes_sent += 1
                peer.remember_probe(nonce, peer.chosen, now)
        elif self._send_relayed(peer, plaintext, now):
            peer.remember_probe(nonce, RELAY_PATH, now)

    def _hears_directly(self, peer: Peer, now: float) -> bool:
        heard = self.manager.last_direct_recv(peer.node_id)
        return heard is not None and now - heard <= self.config.keepalive_interval * 2

    def _to_relay(
        self, peer: Peer, event: PeerEvent, reason: PathReason, now: float, detail: str = ""
    ) -> None:
        """Leave the direct path: relay (pinned, so only a check brings it back)."""
        self.manager.set_relay_peer_pinned(peer.node_id, True)
        self._change(peer, event, reason, now, detail)
        peer.keepalive_nonce = None
        peer.unanswered = 0
        for state in peer.candidates.values():
            state.rtt = None  # every candidate must answer again before it is chosen
        peer.check_until = None
        peer.backoff = self.config.probe_initial_interval
        peer.next_check_at = now + peer.backoff
