"""The sidecar's peer engine: sans-I/O, fed inputs with ``now``, drained of outputs.

Inputs (each with the current monotonic ``now``): a datagram and its source
(:meth:`Engine.datagram_received`, with the index of the local socket that
read it: 0 is the peer socket, others are port prediction's spray sockets),
an application payload
(:meth:`Engine.app_send`), a send error (:meth:`Engine.send_failed`), a
registry answer (:meth:`Engine.resolved` / :meth:`Engine.resolve_failed`)
and a timer tick (:meth:`Engine.tick`). Outputs, drained by the shell after
every input: datagrams to send (:meth:`Engine.datagrams_to_send`), payloads
for the application (:meth:`Engine.deliveries`), node IDs to look up
(:meth:`Engine.lookups_to_start`), and for port prediction datagrams to send
from spray sockets and the sockets to open and close
(:class:`~.prediction.Prediction`). The engine never touches a socket or a
clock, and never calls back into the shell (docs/protocol.md, "The engine").

The routing Manager stays the authority for relay flags and the blackhole and
ICMP heuristics; its socket is :class:`_Sender`, which queues into the
engine's outbox. Every datagram, the Manager's included, passes one gate
(:meth:`Engine._emit`): never to our own sockets, and within the dialling
budget for addresses that never answered with an authenticated frame.

Invariants:

* Only an authenticated frame is evidence: direct receipts, peer-reflexive
  candidates, verified addresses and path changes follow a frame that opened.
* Relay deliveries and punch commands count only from the current beacon;
  discover replies only from a beacon we asked (:class:`~.observer.Observer`).
* A new peer starts on the relay (its first datagram goes at once) and its
  checks run at the same moment; only an answered probe makes it direct.
* Every map fed from the network is capped; malformed input is dropped and
  counted in :attr:`Engine.drops`, never raised.
"""

from __future__ import annotations

import errno
import logging
import random
from collections import Counter
from collections.abc import Iterable

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from natroute.routing.addr import addr_equal, format_addr
from natroute.routing.constants import PUNCH_PAYLOAD as _PUNCH
from natroute.routing.errors import NoAddressError, RoutingError, SendError, WireError
from natroute.routing.manager import Manager
from natroute.routing.types import Addr
from natroute.routing.wire import (
    MSG_DISCOVER_REPLY,
    MSG_PUNCH_COMMAND,
    MSG_RELAY_DELIVER,
    Discover,
    decode_endpoint,
    encode_message,
    encode_relay,
)

from .budget import BudgetConfig, DialBudget
from .candidates import Candidate, SelfAddrs
from .checks import Checks
from .crypto import FRAME_MAGIC, FRAME_OVERHEAD, AuthError, PeerCipher, frame_sender
from .frames import (
    InnerType,
    decode_candidates,
    decode_inner,
    decode_predict,
    encode_probe,
    probe_nonce,
)
from .lookups import LookupConfig, LookupOutcome, Lookups, Refusal
from .model import DropReason, NatType, NodeConfig, PeerInfo, PredictConfig, Transport
from .observer import EndpointChange, Observer, Outcome
from .peers import RELAY_PATH, Path, PathReason, Peer, PeerEvent, PeerTable
from .prediction import Prediction
from .waiting import WaitingRoom

__all__ = ["Engine", "SendRefusedError"]

_log = logging.getLogger(__name__)

#: The Manager hears of direct receipts and sends at most this often per peer on
#: the busy path (its timestamps feed heuristics that count in seconds).
_SYNC_INTERVAL = 0.25
_KEEPALIVE = bytes([InnerType.KEEPALIVE])
_DATA = bytes([InnerType.DATA])


class SendRefusedError(OSError):
    """The engine's gate refused a datagram (own address or dialling budget)."""

    def __init__(self, reason: DropReason) -> None:
        super().__init__(errno.EPERM, f"send refused: {reason.value}")
        self.reason = reason


class _Sender:
    """The Manager's ``SocketSender``: queues into the engine's outbox through its gate."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def sendto(self, data: bytes, addr: Addr, /) -> int:
        engine = self._engine
        peer = engine.peers.by_addr(addr)
        refused = engine._gate(data, addr, engine._now, peer.node_id if peer else None)
        if refused is not None:
            raise SendRefusedError(refused)
        if peer is not None and peer.via and addr == peer.chosen:
            engine._extra_out.append((peer.via, data, addr))
        else:
            engine._out.append((data, addr))
        return len(data)


class Engine(Checks, Prediction):
    """One node's peers, paths and frames.

    Args:
        manager: the routing Manager (the engine wires its socket).
        config: timers and caps.
        rng: probe nonces.
        budget: dialling budget of unverified addresses.
        lookups: registry look-up caps and pacing.
        self_addrs: our own sockets' addresses (never a destination).
        observer: discover bookkeeping (public endpoint, NAT type).
        predict: port prediction (off by default).
    """

    def __init__(
        self,
        manager: Manager,
        config: NodeConfig | None = None,
        *,
        rng: random.Random | None = None,
        budget: BudgetConfig | None = None,
        lookups: LookupConfig | None = None,
        self_addrs: SelfAddrs | None = None,
        observer: Observer | None = None,
        predict: PredictConfig | None = None,
    ) -> None:
        self.manager = manager
        self.config = cfg = config or NodeConfig()
        self.node_id: int | None = None
        self.peers = PeerTable(cfg.max_peers)
        self.nat_type = NatType.UNKNOWN
        self.transport = Transport.UDP
        self.local_candidates: list[Candidate] = []
        self.self_addrs = self_addrs or SelfAddrs()
        self.budget = DialBudget(budget)
        self.lookups = Lookups(lookups)
        self.waiting = WaitingRoom(cfg)
        self.observer = observer or Observer()
        self.beacons: dict[str, Addr] = {}  # every listed beacon: discovers may go there
        self.drops: Counter[DropReason] = Counter()
        self.path_changes: Counter[PathReason] = Counter()
        self.endpoint_changes: list[EndpointChange] = []
        self.punches_received = 0
        self.punch_commands = 0
        self.relayed_in = 0
        self.direct_in = 0
        self._retired = [0, 0, 0, 0]
        # a peer forgotten and met again in the same epoch must not reuse counters
        # (its receiver would refuse them as replays): new ciphers start above
        # every counter a removed peer's cipher used
        self._counter_floor = 0
        self._key: X25519PrivateKey | None = None
        self._epoch = 0
        self._rng = rng or random.Random()
        self._now = 0.0
        self._out: list[tuple[bytes, Addr]] = []
        self._deliveries: list[tuple[int, bytes]] = []
        self._init_prediction(predict or PredictConfig())
        manager.set_socket(_Sender(self))
        manager.set_local_node_id_fn(lambda: self.node_id or 0)

    # -- wiring ---------------------------------------------------------------

    def set_identity(self, node_id: int, x25519_key: X25519PrivateKey, epoch: int) -> None:
        """Our node ID, frame key and send epoch (strictly increasing across restarts)."""
        self.node_id = node_id
        self._key = x25519_key
        self._epoch = epoch

    def set_local_candidates(self, candidates: Iterable[Candidate]) -> None:
        """What we offer peers in CALL_ME_MAYBE (host and server-reflexive);
        nothing when we relay every peer by setting."""
        self.local_candidates = [] if self.config.force_relay else list(candidates)

    def set_nat_type(self, nat_type: NatType) -> None:
        """Our NAT's mapping behaviour (a hint for reason codes; never forbids checks)."""
        self.nat_type = nat_type

    def set_transport(self, transport: Transport, now: float) -> None:
        """UDP, or a stream to the beacon (no direct path can exist then)."""
        if transport is self.transport:
            return
        self.transport = transport
        for peer in self.peers.values():
            if transport is Transport.STREAM:
                self.manager.set_relay_peer_pinned(peer.node_id, True)
                self._change(peer, PeerEvent.NO_UDP, PathReason.NO_UDP, now)
                peer.check_until = peer.next_check_at = None
            else:
                self.start_checks(peer, now)

    # -- outputs --------------------------------------------------------------

    def datagrams_to_send(self) -> list[tuple[bytes, Addr]]:
        """Datagrams queued since the last call, in order."""
        out, self._out = self._out, []
        return out

    def deliveries(self) -> list[tuple[int, bytes]]:
        """``(source node ID, payload)`` for the application, in order."""
        out, self._deliveries = self._deliveries, []
        return out

    def lookups_to_start(self, now: float) -> list[int]:
        """Node IDs the shell should look up at the registry now."""
        return self.lookups.start(now)

    # -- the gate -------------------------------------------------------------

    def _is_beacon(self, addr: Addr) -> bool:
        if self.manager.is_from_beacon(addr):
            return True
        return any(addr_equal(addr, b) for b in self.beacons.values())

    def _gate(
        self, data: bytes, addr: Addr, now: float, peer: int | None = None
    ) -> DropReason | None:
        """None when ``data`` may go to ``addr``; else why not (counted)."""
        reason: DropReason | None = None
        if addr in self.self_addrs:
            reason = DropReason.SELF_ADDRESSED
        elif not self._is_beacon(addr) and not self.budget.allow(addr, len(data), now, peer):
            reason = DropReason.DIAL_BUDGET
        if reason is not None:
            self.drops[reason] += 1
        return reason

    def _emit(
        self, data: bytes, addr: Addr, now: float, peer: int | None = None, via: int = 0
    ) -> bool:
        """Queue ``data`` for ``addr`` through the gate, from local socket ``via``."""
        if self._gate(data, addr, now, peer) is not None:
            return False
        if via:
            self._extra_out.append((via, data, addr))
        else:
            self._out.append((data, addr))
        return True

    def _send_relayed(self, peer: Peer, plaintext: bytes, now: float) -> bool:
        """One frame through the beacon, whatever the peer's path."""
        beacon = self.manager.beacon_addr()
        if beacon is None or self.node_id is None:
            self.drops[DropReason.NO_BEACON] += 1
            return False
        frame = peer.cipher.seal(plaintext)
        return self._emit(encode_relay(self.node_id, peer.node_id, frame), beacon, now)

    # -- beacons ----------------------------------------------------------------

    def send_discover(self, beacon: str, addr: Addr, now: float, extra: bytes = b"") -> None:
        """A Discover to ``beacon`` at ``addr``: our ID and ``extra`` (a signature)
        when registering, ID 0 (observation only) when ``extra`` is empty."""
        self._now = now
        node_id = self.node_id if extra and self.node_id is not None else 0
        if self._emit(encode_message(Discover(node_id, extra)), addr, now):
            self.observer.sent(beacon, addr, now)

    def check_nat(self, beacons: list[tuple[str, Addr]], now: float) -> None:
        """Ask two beacons at once what they see of our peer socket (classification)."""
        self.observer.start_check(tuple(b for b, _ in beacons), now)
        for beacon, addr in beacons:
            self.send_discover(beacon, addr, now)

    def _on_discover_reply(self, data: bytes, src: Addr, now: float) -> None:
        try:
            observed = decode_endpoint(data[1:])
        except WireError:
            self.drops[DropReason.MALFORMED] += 1
            return
        change, _ = self.observer.reply(src, observed, now)
        if change.outcome is Outcome.IGNORED:
            self.drops[DropReason.UNSOLICITED_REPLY] += 1
            return
        self._note_endpoint(change)
        if self.observer.wants_confirmation:
            for beacon, addr in self.beacons.items():
                self.send_discover(beacon, addr, now)
            self.observer.confirmation_sent(now)

    def _note_endpoint(self, change: EndpointChange) -> None:
        if change.outcome in (Outcome.FIRST, Outcome.ADOPTED, Outcome.REJECTED):
            self.endpoint_changes.append(change)
            log = _log.warning if change.outcome is Outcome.REJECTED else _log.info
            log(
                "public_endpoint_" + change.outcome.value,
                extra={
                    "old": format_addr(change.old) if change.old else None,
                    "new": format_addr(change.new) if change.new else None,
                    "detail": change.detail,
                },
            )

    # -- inbound ----------------------------------------------------------------

    def datagram_received(self, data: bytes, src: Addr, now: float, local: int = 0) -> None:
        """Demultiplex one datagram from the peer socket (or the beacon stream), or
        from spray socket ``local``."""
        self._now = now
        if local:
            self._spray_socket_datagram(data, src, local, now)
            return
        if not data:
            self.drops[DropReason.EMPTY] += 1
            return
        kind = data[0]
        if kind < 0x10:
            self._beacon_message(kind, data, src, now)
        elif len(data) < 4:
            self.drops[DropReason.SHORT] += 1
        elif data[:4] == FRAME_MAGIC:
            self._frame(data, src, False, now)
        elif data[:4] == _PUNCH:
            self.punches_received += 1
        else:
            self.drops[DropReason.UNKNOWN_MAGIC] += 1

    def datagrams_received(
        self, items: list[tuple[bytes, Addr]], now: float, local: int = 0
    ) -> None:
        """A batch read at once: frames from known peers go straight to ``_open``."""
        self._now = now
        if local:
            for data, src in items:
                self._spray_socket_datagram(data, src, local, now)
            return
        get = self.peers.get
        for data, src in items:
            if len(data) >= FRAME_OVERHEAD and data[:4] == FRAME_MAGIC:
                peer = get(int.from_bytes(data[4:8], "big"))
                if peer is not None:
                    self._open(peer, data, src, False, now)
                    continue
            self.datagram_received(data, src, now)

    def _spray_socket_datagram(self, data: bytes, src: Addr, local: int, now: float) -> None:
        """Only frames of the peer a spray socket was opened for count there."""
        owner = self.socket_owner(local)
        peer = self.peers.get(owner) if owner is not None else None
        if peer is None or frame_sender(data) != peer.node_id:
            self.drops[DropReason.WRONG_SOCKET] += 1
            return
        self._open(peer, data, src, False, now, local)

    def _beacon_message(self, kind: int, data: bytes, src: Addr, now: float) -> None:
        if kind == MSG_DISCOVER_REPLY:
            self._on_discover_reply(data, src, now)
            return
        if not self.manager.is_from_beacon(src):
            self.drops[DropReason.NOT_FROM_BEACON] += 1
        elif kind == MSG_RELAY_DELIVER:
            if len(data) < 9:
                self.drops[DropReason.SHORT] += 1
                return
            claimed = int.from_bytes(data[1:5], "big")
            payload = data[5:]
            if frame_sender(payload) != claimed:
                self.drops[DropReason.RELAY_SRC_MISMATCH] += 1
                return
            self._frame(payload, src, True, now)
        elif kind == MSG_PUNCH_COMMAND:
            if self.manager.handle_punch_command(data[1:]) == 0:
                self.drops[DropReason.MALFORMED] += 1
                return
            self.punch_commands += 1
            peer = self.peers.by_addr(decode_endpoint(data[1:]))
            if peer is not None and peer.check_until is None and peer.path is Path.RELAY:
                self.start_checks(peer, now, call_me_maybe=False)
        else:
            self.drops[DropReason.UNEXPECTED_BEACON_MSG] += 1

    def _frame(self, frame: bytes, src: Addr, relayed: bool, now: float) -> None:
        sender = frame_sender(frame)
        if sender is None:
            self.drops[DropReason.SHORT] += 1
            return
        peer = self.peers.get(sender)
        if peer is None:
            self._hold_unknown(sender, frame, src, relayed, now)
            return
        self._open(peer, frame, src, relayed, now)

    def _hold_unknown(
        self, sender: int, frame: bytes, src: Addr, relayed: bool, now: float
    ) -> None:
        """Keep a few frames of an unknown sender while the registry is asked."""
        if sender == self.node_id or self.node_id is None:
            self.drops[DropReason.UNKNOWN_SENDER] += 1
            return
        if self.lookups.known_unknown(sender, now):
            self.drops[DropReason.UNKNOWN_SENDER] += 1
            return
        refused = self.waiting.hold_in(sender, (frame, src, relayed), now)
        if refused is not None:
            self.drops[refused] += 1
            return
        self._request_lookup(sender, now)

    def look_up(self, node_id: int, now: float) -> None:
        """Ask the registry for ``node_id`` (an operator's ping of a node not yet a peer)."""
        if self.peers.get(node_id) is None and node_id != self.node_id:
            self.lookups.request(node_id, now)

    def _request_lookup(self, node_id: int, now: float) -> None:
        refusal = self.lookups.request(node_id, now)
        if refusal is not None and not self.lookups.is_pending(node_id):
            if refusal is Refusal.TOO_SOON:
                return  # the hold timeout or the next retry decides
            self.drops[DropReason.LOOKUP_REFUSED] += self.waiting.forget(node_id) or 1

    def _open(
        self, peer: Peer, frame: bytes, src: Addr, relayed: bool, now: float, local: int = 0
    ) -> None:
        """Authenticate, then account for the receipt and act on its content."""
        try:
            plaintext = peer.cipher.open(frame)
        except AuthError:
            self.drops[DropReason.AUTH_FAILED] += 1
            return
        inner = decode_inner(plaintext)
        if inner is None:
            self.drops[DropReason.BAD_INNER] += 1
            return
        node_id = peer.node_id
        peer.last_heard = now
        peer.pkts_recv += 1
        peer.bytes_recv += len(frame)
        if now - peer.synced_recv_at >= _SYNC_INTERVAL or relayed:
            self.manager.clear_send_err_count(node_id)
        if relayed:
            peer.relay_recv += 1
            self.relayed_in += 1
        else:
            self._direct_receipt(peer, src, now, local)
        kind, body = inner
        if kind is InnerType.DATA:
            peer.last_used = now
            self._deliveries.append((node_id, body))
        elif kind is InnerType.PROBE:
            ack = encode_probe(InnerType.PROBE_ACK, probe_nonce(body))
            if relayed:
                self._send_relayed(peer, ack, now)
            elif not self.config.force_relay:  # relay-only nodes never answer directly
                self._emit(peer.cipher.seal(ack), src, now, via=local)
        elif kind is InnerType.PROBE_ACK:
            peer.acks_recv += 1
            self.on_probe_ack(peer, probe_nonce(body), src, relayed, now, local)
        elif kind is InnerType.CALL_ME_MAYBE:
            self.on_call_me_maybe(peer, decode_candidates(body) or [], now)
        elif kind is InnerType.PREDICT:
            message = decode_predict(body)
            if message is not None:  # decode_inner checked it
                self.on_predict(peer, message, now)
        if not relayed and peer.path is Path.DIRECT:
            self._maybe_answer(peer, now)

    def _direct_receipt(self, peer: Peer, src: Addr, now: float, local: int = 0) -> None:
        peer.direct_recv += 1
        self.direct_in += 1
        peer.last_direct_at = now
        if src == peer.chosen and local == peer.via and now - peer.synced_recv_at < _SYNC_INTERVAL:
            return  # the busy path: a verified, known address; the Manager heard lately
        peer.synced_recv_at = now
        mgr = self.manager
        node_id = peer.node_id
        self.budget.verify(src)
        mgr.clear_relay_on_direct(node_id, src)  # resets blackhole misses
        mgr.record_direct_recv(node_id, now)
        if self.config.force_relay:
            return
        if local:
            self.on_spray_socket_receipt(peer, src, local, now)
        else:
            self.learn_peer_reflexive(peer, src, now)

    def _maybe_answer(self, peer: Peer, now: float) -> None:
        """Keep the peer's receipt times fresh when traffic is one-way."""
        if now - peer.last_sent_at > self.manager.config.blackhole_threshold / 2:
            self._write(peer, _KEEPALIVE, now)

    # -- outbound ---------------------------------------------------------------

    def app_send(self, dst: int, payload: bytes, now: float) -> None:
        """Send an application payload to node ``dst`` (looking it up first if new)."""
        self._now = now
        peer = self.peers.get(dst)
        if peer is not None:
            peer.last_used = now
            self._write(peer, _DATA + payload, now)
            return
        if dst == self.node_id or self.lookups.known_unknown(dst, now):
            self.drops[DropReason.UNRESOLVED] += 1
            return
        dropped = self.waiting.hold_out(dst, payload, now)
        if dropped is not None:
            self.drops[dropped] += 1
        self._request_lookup(dst, now)

    def app_send_many(self, datagrams: list[bytes], now: float) -> None:
        """``app_send`` for a batch of ``[dst u32][payload]`` datagrams from the application.

        Runs to one direct, fresh peer (the busy case) are sealed and queued
        here with the peer's counters updated once per run; anything else
        takes ``app_send``.
        """
        self._now = now
        get = self.peers.get
        out = self._out
        threshold = self.manager.config.blackhole_threshold
        peer: Peer | None = None
        chosen: Addr | None = None
        key = b""
        run = run_bytes = 0
        for data in datagrams:
            if peer is None or chosen is None or data[:4] != key:
                if peer is not None and run:
                    peer.last_used = now
                    self._sent_run(peer, run, run_bytes, now)
                run = run_bytes = 0
                key = data[:4]
                peer = get(int.from_bytes(key, "big"))
                chosen = None if peer is None else peer.chosen
                if (
                    peer is None
                    or chosen is None
                    or peer.via
                    or peer.path is not Path.DIRECT
                    or now - peer.last_direct_at > threshold
                ):
                    peer = None
                    self.app_send(int.from_bytes(key, "big"), data[4:], now)
                    continue
            frame = peer.cipher.seal(_DATA + data[4:])
            out.append((frame, chosen))
            run += 1
            run_bytes += len(frame)
        if peer is not None and run:
            peer.last_used = now
            self._sent_run(peer, run, run_bytes, now)

    def _sent_run(self, peer: Peer, count: int, size: int, now: float) -> None:
        """Account for ``count`` frames (``size`` bytes) sent to a direct peer at once."""
        peer.pkts_sent += count
        peer.bytes_sent += size
        peer.last_sent_at = now
        if now - peer.synced_send_at >= _SYNC_INTERVAL:
            peer.synced_send_at = now
            self.manager.record_outbound_send(peer.node_id, now)

    def _write(self, peer: Peer, plaintext: bytes, now: float) -> None:
        """Seal and send through ``Manager.write_frame`` (it picks direct or relay).

        The busy path skips the Manager while its answer is known: a direct peer
        heard from within the blackhole threshold cannot be flipped by
        ``write_frame``'s check, and its chosen address passed the gate when it
        answered. The Manager still hears of the sends, a few times a second.
        """
        frame = peer.cipher.seal(plaintext)
        chosen = peer.chosen
        mgr = self.manager
        if (
            peer.path is Path.DIRECT
            and chosen is not None
            and now - peer.last_direct_at <= mgr.config.blackhole_threshold
        ):
            if peer.via:
                self._extra_out.append((peer.via, frame, chosen))
            else:
                self._out.append((frame, chosen))
            self._sent_run(peer, 1, len(frame), now)
            return
        addr = chosen if peer.path is Path.DIRECT else None
        try:
            outcome = self.manager.write_frame(peer.node_id, addr, frame, peer)
        except NoAddressError:
            self.drops[DropReason.NO_ADDRESS] += 1
            return
        except SendError as exc:
            if not isinstance(exc.__cause__, SendRefusedError):  # the gate counted its own
                self.drops[DropReason.SEND_ERROR] += 1
            return
        except (OSError, RoutingError):
            self.drops[DropReason.SEND_ERROR] += 1
            return
        peer.last_sent_at = peer.synced_send_at = now
        if outcome.was_relay and peer.path is Path.DIRECT:
            # write_frame's blackhole check flipped the peer
            self._to_relay(peer, PeerEvent.HEURISTIC, PathReason.BLACKHOLE, now)

    def count_send_drops(self, count: int) -> None:
        """Datagrams a batched send lost (the shell cannot say which): counted only."""
        self.drops[DropReason.SEND_ERROR] += count

    def send_failed(self, dst: Addr, err: OSError, now: float, local: int = 0) -> None:
        """A datagram to ``dst`` failed (a send error or an ICMP error from the kernel)
        on local socket ``local``."""
        self._now = now
        self.drops[DropReason.SEND_ERROR] += 1
        if self._is_beacon(dst):
            return  # relay peers reach us through the beacon; its errors are not theirs
        peer = self.peers.by_addr(dst)
        if peer is None:
            return
        state = peer.candidates.get(dst)
        if state is None or state.via != local:
            return  # not from the socket that reaches it (a spray probe's error): counted only
        state.failed_at = now
        if peer.path is Path.DIRECT and peer.chosen == dst:
            flipped, _ = self.manager.handle_send_error(peer.node_id, err)
            if flipped:
                reason = PathReason.ICMP_UNREACHABLE
                self._to_relay(peer, PeerEvent.HEURISTIC, reason, now, str(err))

    # -- registry answers -------------------------------------------------------

    def resolve_failed(self, node_id: int, *, unknown: bool, now: float) -> None:
        """The registry does not know ``node_id`` (``unknown``) or did not answer."""
        self._now = now
        if unknown:
            self.lookups.finished(node_id, LookupOutcome.UNKNOWN, now)
            self.drops[DropReason.UNRESOLVED] += self.waiting.forget(node_id)
        else:
            self.lookups.finished(node_id, LookupOutcome.FAILED, now)

    def resolved(self, info: PeerInfo, now: float) -> None:
        """A registry answer: create or update the peer, then handle what waited."""
        self._now = now
        if info.node_id == self.node_id or self._key is None or self.node_id is None:
            self.resolve_failed(info.node_id, unknown=True, now=now)
            return
        peer = self.peers.get(info.node_id)
        if peer is None:
            try:
                cipher = PeerCipher(
                    self.node_id,
                    self._key,
                    info.node_id,
                    info.x25519_key,
                    self._epoch,
                    self._counter_floor,
                )
            except ValueError:
                self.resolve_failed(info.node_id, unknown=True, now=now)
                return
            peer = Peer(info.node_id, cipher, info.relay_only, now, info.name, last_used=now)
            if not self.peers.add(peer):
                self.lookups.finished(info.node_id, LookupOutcome.FAILED, now)
                self.drops[DropReason.PEER_TABLE_FULL] += 1 + self.waiting.forget(info.node_id)
                return
            self.lookups.finished(info.node_id, LookupOutcome.FOUND, now)
            self._update(peer, info, now)
            self._first_contact(peer, info, now)
        else:
            self.lookups.finished(info.node_id, LookupOutcome.FOUND, now)
            self._update(peer, info, now)
        frames, payloads = self.waiting.take(info.node_id)
        for frame, src, relayed in frames:
            self._open(peer, frame, src, relayed, now)
        for payload in payloads:
            self._write(peer, _DATA + payload, now)

    def _update(self, peer: Peer, info: PeerInfo, now: float) -> None:
        peer.last_resolved = now
        peer.relay_only = info.relay_only
        peer.name = info.name
        peer.stream_only = info.transport is Transport.STREAM
        new = False
        for candidate in info.candidates:
            known = candidate.addr in peer.candidates
            new = (self.add_remote_candidate(peer, candidate, now) and not known) or new
        if new and peer.path is Path.RELAY and peer.check_until is None and peer.events:
            self.start_checks(peer, now)

    def _first_contact(self, peer: Peer, info: PeerInfo, now: float) -> None:
        """Relay at once; probe the peer's candidates at the same moment."""
        self.manager.set_relay_peer_pinned(peer.node_id, True)
        if self.transport is Transport.STREAM:
            reason, detail = PathReason.NO_UDP, "we reach the beacon over a stream"
        elif peer.stream_only:
            reason, detail = PathReason.NO_UDP, "the peer reaches its beacon over a stream"
        elif self.config.force_relay:
            reason, detail = PathReason.FORCED_RELAY, "relay-only setting"
        elif not peer.candidates:
            reason, detail = PathReason.NO_CANDIDATES, "waiting for the peer's probes"
        else:
            hints = []
            if info.relay_only:
                hints.append("peer registered relay_only")
            if self.nat_type is NatType.ENDPOINT_DEPENDENT:
                hints.append("our NAT maps per destination")
            reason, detail = PathReason.CHECKING, "; ".join(hints)
        self._change(peer, PeerEvent.START, reason, now, detail)
        peer.next_keepalive_at = now + self.config.keepalive_interval
        self.start_checks(peer, now)

    # -- upkeep -----------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Timers: endpoint confirmation, held traffic, checks, keepalives, expiry."""
        self._now = now
        change = self.observer.tick(now)
        if change is not None:
            self._note_endpoint(change)
        expired = self.waiting.expire(now)
        if expired:
            self.drops[DropReason.PENDING_EXPIRED] += expired
        self.budget.sweep(now)
        self.retry_waiting(now)
        self.release_sockets()
        cfg = self.config
        for peer in self.peers.values():
            if now - peer.last_used > cfg.peer_idle_timeout:
                self.remove_peer(peer.node_id)
                continue
            self.upkeep_paths(peer, now)
            self.upkeep_prediction(peer, now)
            if now - peer.last_resolved >= cfg.peer_refresh_interval:
                peer.last_resolved = now  # one refresh per interval, answered or not
                self._request_lookup(peer.node_id, now)

    def retry_waiting(self, now: float) -> None:
        """Ask again for node IDs whose traffic still waits (after a failed look-up)."""
        for node_id in self.waiting.node_ids():
            if not self.lookups.is_pending(node_id):
                self.lookups.request(node_id, now)

    def _change(
        self, peer: Peer, event: PeerEvent, reason: PathReason, now: float, detail: str = ""
    ) -> None:
        peer.apply(event, reason, now, detail)
        self.path_changes[reason] += 1
        _log.info(
            "peer_path_changed",
            extra={
                "peer": peer.node_id,
                "path": peer.path.value if peer.path else None,
                "reason": reason.value,
                "detail": detail,
            },
        )

    # -- operator actions -------------------------------------------------------

    def set_relay(self, node_id: int, relay: bool, pinned: bool, now: float) -> bool:
        """Force a peer onto the relay (``pinned``: for good), or allow direct again."""
        peer = self.peers.get(node_id)
        if peer is None:
            return False
        if relay:
            peer.pinned_by_operator = pinned
            self.manager.set_relay_peer_pinned(node_id, True)
            self._change(peer, PeerEvent.PIN, PathReason.OPERATOR, now, "pinned" if pinned else "")
            peer.check_until = None
            peer.next_check_at = None if pinned else now + self.config.probe_initial_interval
        else:
            peer.pinned_by_operator = False
            if peer.path is Path.RELAY:
                self._change(peer, PeerEvent.UNPIN, PathReason.CHECKING, now, "operator")
            self.start_checks(peer, now)
        return True

    def punch(self, node_id: int, now: float) -> bool:
        """Run the checks of a peer now; False when unknown."""
        peer = self.peers.get(node_id)
        if peer is None:
            return False
        self.start_checks(peer, now)
        return True

    def ping(self, node_id: int, now: float) -> list[tuple[int, str]]:
        """Probe a peer over its direct path (if any) and over the relay.

        Returns:
            ``(nonce, path)`` of each probe sent; answers land in ``peer.ping_results``.
        """
        self._now = now
        peer = self.peers.get(node_id)
        if peer is None:
            return []
        sent: list[tuple[int, str]] = []
        if peer.path is Path.DIRECT and peer.chosen is not None:
            nonce = self._rng.getrandbits(64)
            probe = peer.cipher.seal(encode_probe(InnerType.PROBE, nonce))
            if self._emit(probe, peer.chosen, now, via=peer.via):
                peer.remember_probe(nonce, peer.chosen, now)
                sent.append((nonce, "direct"))
        nonce = self._rng.getrandbits(64)
        if self._send_relayed(peer, encode_probe(InnerType.PROBE, nonce), now):
            peer.remember_probe(nonce, RELAY_PATH, now)
            sent.append((nonce, "relay"))
        return sent

    def remove_peer(self, node_id: int) -> bool:
        """Forget a peer entirely (also its Manager state); False when unknown."""
        self.waiting.forget(node_id)
        self.manager.remove_peer(node_id)
        self.forget_prediction(node_id)
        peer = self.peers.remove(node_id)
        if peer is None:
            return False
        self._counter_floor = max(self._counter_floor, peer.cipher.next_counter)
        for i, value in enumerate(_traffic(peer)):
            self._retired[i] += value
        return True

    def traffic_totals(self) -> tuple[int, int, int, int]:
        """``(pkts_sent, bytes_sent, pkts_recv, bytes_recv)`` since start, removed peers too."""
        totals = list(self._retired)
        for peer in self.peers.values():
            for i, value in enumerate(_traffic(peer)):
                totals[i] += value
        return totals[0], totals[1], totals[2], totals[3]


def _traffic(peer: Peer) -> tuple[int, int, int, int]:
    return peer.pkts_sent, peer.bytes_sent, peer.pkts_recv, peer.bytes_recv
