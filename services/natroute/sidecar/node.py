"""The sidecar's peer logic: drives the routing Manager as the spec's caller (§7).

Sans-I/O: fed datagrams, application payloads, registry answers and the
clock; sends through the injected socket (via the Manager) and reports to
the shell through :class:`NodeIO`. Every protocol decision of the sidecar
lives here; ``udp.py`` only moves bytes and time.

Invariants:

* Only an authenticated frame is evidence: direct receipts
  (``clear_send_err_count``, ``clear_relay_on_direct``,
  ``record_direct_recv``) and relay activation happen after a frame opened.
* Punch commands and relay deliveries count only from the current beacon.
* Relay flags set by heuristics (blackhole, ICMP, dial failure, peer
  relayed) are re-probed with backoff and undone by authenticated direct
  answers; ``relay_only`` peers and a local symmetric NAT pin for good.
* Every map fed from the network is capped; malformed input is dropped and
  counted in :attr:`Node.drops`, never raised.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from natroute.routing.errors import NoAddressError, RoutingError, WireError
from natroute.routing.manager import Manager
from natroute.routing.types import Addr, SocketSender
from natroute.routing.wire import (
    MSG_DISCOVER_REPLY,
    MSG_PUNCH_COMMAND,
    MSG_RELAY_DELIVER,
    decode_endpoint,
)

from .crypto import FRAME_MAGIC, AuthError, PeerCipher, frame_sender
from .frames import InnerType, decode_inner, encode_probe
from .model import DropReason, NatType, NodeConfig, NodeIO, PeerInfo
from .peers import HEURISTIC_REASONS, Path, PathReason, Peer, PeerTable
from .waiting import WaitingRoom

__all__ = ["DropReason", "NatType", "Node", "NodeConfig", "NodeIO", "PeerInfo"]

_log = logging.getLogger(__name__)

_PUNCH = b"PILP"
_KEEPALIVE = bytes([InnerType.KEEPALIVE])
_DATA = bytes([InnerType.DATA])


class Node:
    """One node's peers, paths and frames.

    Args:
        manager: the routing Manager (its beacon and socket are wired by the shell).
        io: the shell's callbacks.
        node_id: our node ID; ``x25519_key``: our frame key; ``epoch``: our send
            epoch, strictly increasing across restarts.
        config: timers and caps.
        clock: the Manager's monotonic clock.
        rng: source of probe nonces.
    """

    def __init__(
        self,
        manager: Manager,
        io: NodeIO,
        node_id: int,
        x25519_key: X25519PrivateKey,
        epoch: int,
        config: NodeConfig | None = None,
        *,
        clock: Callable[[], float],
        rng: random.Random | None = None,
    ) -> None:
        self.manager = manager
        self.io = io
        self.node_id = node_id
        self.config = config or NodeConfig()
        self.peers = PeerTable(self.config.max_peers)
        self.nat_type = NatType.UNKNOWN
        self.relay_only = False
        self.drops: Counter[DropReason] = Counter()
        self.punches_received = 0
        self.punch_commands = 0
        #: path changes by reason, since start (exact, unlike the bounded histories)
        self.path_changes: Counter[PathReason] = Counter()
        # pkts_sent, bytes_sent, pkts_recv, bytes_recv of peers already removed
        self._retired = [0, 0, 0, 0]
        self.relayed_in = 0
        self.direct_in = 0
        self._key = x25519_key
        self._epoch = epoch
        self._clock = clock
        self._rng = rng or random.Random()
        self._sock: SocketSender | None = None
        self._waiting = WaitingRoom(self.config, io.resolve)
        manager.set_local_node_id_fn(lambda: self.node_id)

    # -- wiring -------------------------------------------------------------

    def set_socket(self, sock: SocketSender | None) -> None:
        """Wire the node's UDP socket into the Manager and the probe path."""
        self._sock = sock
        self.manager.set_socket(sock)

    def set_nat_type(self, nat_type: NatType, relay_only: bool = False) -> None:
        """Record our NAT type and whether we registered as ``relay_only``.

        Behind a symmetric NAT, or when we declared ourselves relay-only,
        every peer is relayed (pinned): direct paths cannot work from here.
        """
        self.nat_type = nat_type
        self.relay_only = relay_only
        now = self._clock()
        for peer in self.peers.values():
            self._apply_policy(peer, now)

    def _drop(self, reason: DropReason) -> None:
        self.drops[reason] += 1

    # -- outbound -----------------------------------------------------------

    def send_app(self, dst: int, payload: bytes) -> None:
        """Send an application payload to node ``dst`` (resolving it first if new)."""
        now = self._clock()
        peer = self.peers.get(dst)
        if peer is None:
            dropped = self._waiting.hold_out(dst, payload, now)
            if dropped is not None:
                self._drop(dropped)
            return
        peer.last_used = now
        if peer.dial_deadline is not None:
            self._hold(peer, payload)
            return
        self._write(peer, _DATA + payload)

    def _hold(self, peer: Peer, payload: bytes) -> None:
        """Keep a payload until the dial is over (the peer's NAT may not be open yet)."""
        if len(peer.held) >= self.config.pending_per_peer:
            peer.held.popleft()
            self._drop(DropReason.PENDING_FULL)
        peer.held.append(payload)

    def _end_dial(self, peer: Peer) -> None:
        """The dial is over (answered, failed, or the peer is relayed): send what waited."""
        peer.dial_deadline = None
        while peer.held:
            self._write(peer, _DATA + peer.held.popleft())

    def _write(self, peer: Peer, plaintext: bytes) -> None:
        """Seal and send through ``Manager.write_frame``; record flips it causes."""
        frame = peer.cipher.seal(plaintext)
        try:
            outcome = self.manager.write_frame(peer.node_id, peer.addr, frame, peer)
        except NoAddressError:
            self._drop(DropReason.NO_ADDRESS)
            return
        except (OSError, RoutingError) as exc:
            self._drop(DropReason.SEND_ERROR)
            self._note_icmp_flip(peer, getattr(exc, "was_relay", None))
            return
        if outcome.was_relay and peer.path is Path.DIRECT:
            self._event(peer, Path.RELAY, PathReason.BLACKHOLE, "direct path silent")
            self._schedule_probe(peer, self._clock(), reset=True)

    def _note_icmp_flip(self, peer: Peer, was_relay: bool | None) -> None:
        if (
            was_relay is False
            and peer.path is Path.DIRECT
            and self.manager.is_relay_peer(peer.node_id)
        ):
            self._event(peer, Path.RELAY, PathReason.ICMP_UNREACHABLE, "send error")

    def _send_raw(self, data: bytes, addr: Addr) -> bool:
        sock = self._sock
        if sock is None:
            return False
        try:
            sock.sendto(data, addr)
        except OSError:
            self._drop(DropReason.SEND_ERROR)
            return False
        return True

    # -- resolution ---------------------------------------------------------

    def on_resolve_failed(self, node_id: int) -> None:
        """The registry does not know ``node_id`` (or failed): drop what waits for it."""
        self.drops[DropReason.UNRESOLVED] += self._waiting.forget(node_id)

    def on_resolved(self, info: PeerInfo) -> None:
        """A registry answer: create or update the peer, then flush what waited."""
        now = self._clock()
        if info.node_id == self.node_id:
            self.on_resolve_failed(info.node_id)
            return
        peer = self.peers.get(info.node_id)
        if peer is None:
            try:
                cipher = PeerCipher(
                    self.node_id, self._key, info.node_id, info.x25519_key, self._epoch
                )
            except ValueError:
                self.on_resolve_failed(info.node_id)
                return
            peer = Peer(info.node_id, cipher, None, info.relay_only, now, last_used=now)
            if not self.peers.add(peer):
                self._drop(DropReason.PEER_TABLE_FULL)
                self.on_resolve_failed(info.node_id)
                return
            self.peers.set_addr(peer, info.endpoint)
            peer.last_resolved = now
            self._first_contact(peer, now)
        else:
            peer.last_resolved = now
            was_relay_only = peer.relay_only
            peer.relay_only = info.relay_only
            if peer.path is Path.DIRECT or peer.addr is None:
                self.peers.set_addr(peer, info.endpoint)
            if was_relay_only and not info.relay_only:
                self.manager.set_relay_peer_pinned(peer.node_id, False)
                self._event(peer, Path.DIRECT, PathReason.RELAY_ONLY_CLEARED)
                self._first_contact(peer, now)
            else:
                self._apply_policy(peer, now)
        frames, payloads = self._waiting.answered(info.node_id)
        for frame, src, relayed in frames:
            self._open(peer, frame, src, relayed)
        for payload in payloads:
            if peer.dial_deadline is not None:
                self._hold(peer, payload)
            else:
                self._write(peer, _DATA + payload)

    def _apply_policy(self, peer: Peer, now: float) -> bool:
        """Pin authoritative relays (registry relay_only, our own NAT or setting)."""
        if peer.relay_only:
            reason = PathReason.RELAY_ONLY
        elif self.nat_type is NatType.ENDPOINT_DEPENDENT:
            reason = PathReason.LOCAL_SYMMETRIC_NAT
        elif self.relay_only:
            reason = PathReason.SELF_RELAY_ONLY
        else:
            return False
        if not self.manager.is_relay_pinned(peer.node_id) or peer.reason is not reason:
            self.manager.set_relay_peer_pinned(peer.node_id, True)
            self._event(peer, Path.RELAY, reason)
        peer.next_probe_at = None
        self._end_dial(peer)
        return True

    def _first_contact(self, peer: Peer, now: float) -> None:
        """Spec §7.2: relay_only → pinned relay; else punch and dial directly."""
        if self._apply_policy(peer, now):
            return
        self._event(peer, Path.DIRECT, PathReason.PUNCHED)
        if peer.addr is not None and not self.manager.is_from_beacon(peer.addr):
            # hold application data until the peer answers (its NAT may not be open
            # yet) or the dial times out; probes repeat meanwhile
            peer.dial_deadline = now + self.config.dial_timeout
            peer.dial_probe_at = now + self.config.dial_probe_interval
        self._punch(peer)  # may already flip the peer (ICMP errors surface on these sends)

    def _punch(self, peer: Peer) -> None:
        try:
            self.manager.request_hole_punch(peer.node_id)
        except OSError:
            self._drop(DropReason.SEND_ERROR)
        if peer.addr is not None and not self.manager.is_from_beacon(peer.addr):
            self._send_raw(_PUNCH, peer.addr)
            self._probe(peer)

    def _probe(self, peer: Peer) -> None:
        """Send PROBEs straight to the peer's address (never relayed)."""
        addr = peer.addr
        if addr is None or self.manager.is_from_beacon(addr):
            return
        for _ in range(self.manager.config.direct_clears_required):
            peer.probe_nonce = self._rng.getrandbits(64)
            frame = peer.cipher.seal(encode_probe(InnerType.PROBE, peer.probe_nonce))
            if self._send_raw(frame, addr):
                peer.probes_sent += 1

    # -- inbound ------------------------------------------------------------

    def datagram_received(self, data: bytes, src: Addr) -> None:
        """Demultiplex one datagram from the node's socket (spec §3.1, §7.3)."""
        if not data:
            self._drop(DropReason.EMPTY)
            return
        kind = data[0]
        if kind < 0x10:
            self._beacon_message(kind, data, src)
        elif len(data) < 4:
            self._drop(DropReason.SHORT)
        elif data[:4] == FRAME_MAGIC:
            self._frame(data, src, relayed=False)
        elif data[:4] == _PUNCH:
            self.punches_received += 1
        else:
            self._drop(DropReason.UNKNOWN_MAGIC)

    def _beacon_message(self, kind: int, data: bytes, src: Addr) -> None:
        if not self.manager.is_from_beacon(src):
            self._drop(DropReason.NOT_FROM_BEACON)
        elif kind == MSG_RELAY_DELIVER:
            if len(data) < 9:
                self._drop(DropReason.SHORT)
                return
            claimed = int.from_bytes(data[1:5], "big")
            payload = data[5:]
            if frame_sender(payload) != claimed:
                self._drop(DropReason.RELAY_SRC_MISMATCH)
                return
            self._frame(payload, src, relayed=True)
        elif kind == MSG_PUNCH_COMMAND:
            if self.manager.handle_punch_command(data[1:]) == 0:
                self._drop(DropReason.MALFORMED)
                return
            self.punch_commands += 1
            peer = self.peers.by_addr(decode_endpoint(data[1:]))
            if peer is not None and peer.direct_recv == 0:
                self._probe(peer)  # the peer punches towards us now: dial it
        elif kind == MSG_DISCOVER_REPLY:
            try:
                self.io.endpoint_observed(decode_endpoint(data[1:]))
            except WireError:
                self._drop(DropReason.MALFORMED)
        else:
            self._drop(DropReason.UNEXPECTED_BEACON_MSG)

    def _frame(self, frame: bytes, src: Addr, relayed: bool) -> None:
        sender = frame_sender(frame)
        if sender is None:
            self._drop(DropReason.SHORT)
            return
        peer = self.peers.get(sender)
        if peer is None:
            self._hold_unknown(sender, frame, src, relayed)
            return
        self._open(peer, frame, src, relayed)

    def _hold_unknown(self, sender: int, frame: bytes, src: Addr, relayed: bool) -> None:
        """Keep a few frames of an unknown sender while the registry is asked."""
        if sender == self.node_id:
            self._drop(DropReason.UNKNOWN_SENDER)
            return
        refused = self._waiting.hold_in(sender, (frame, src, relayed), self._clock())
        if refused is not None:
            self._drop(refused)

    def _open(self, peer: Peer, frame: bytes, src: Addr, relayed: bool) -> None:
        """Authenticate, then account for the receipt as spec §7.3 says."""
        try:
            plaintext = peer.cipher.open(frame)
        except AuthError:
            self._drop(DropReason.AUTH_FAILED)
            return
        inner = decode_inner(plaintext)
        if inner is None:
            self._drop(DropReason.BAD_INNER)
            return
        now = self._clock()
        node_id = peer.node_id
        mgr = self.manager
        mgr.clear_send_err_count(node_id)
        if relayed:
            # Spec §7.3 (later versions): a relayed frame must not drag a peer whose
            # direct path answers onto the relay; it only lags behind our restore.
            heard = mgr.last_direct_recv(node_id)
            if heard is not None and now - heard <= mgr.config.blackhole_threshold:
                admitted, newly, alias = True, False, False
            else:
                admitted, newly, alias = mgr.mark_relay_activated_if_had_crypto(node_id, True)
            if not admitted:
                self._drop(DropReason.RELAY_CAP)
                return
            if alias and peer.addr is None:
                self.peers.set_addr(peer, mgr.beacon_addr())
            if newly and peer.path is Path.DIRECT:
                self._event(peer, Path.RELAY, PathReason.PEER_RELAYED)
                self._schedule_probe(peer, now, reset=True)
            if peer.dial_deadline is not None and mgr.is_relay_peer(node_id):
                self._end_dial(peer)  # the peer reaches us through the beacon: use it too
            mgr.clear_relay_on_direct(node_id, src)
            peer.relay_recv += 1
            self.relayed_in += 1
        else:
            self._direct_receipt(peer, src, now, answered=inner[0] is InnerType.PROBE_ACK)
        peer.pkts_recv += 1
        peer.bytes_recv += len(frame)
        kind, body = inner
        if kind is InnerType.DATA:
            peer.last_used = now
            self.io.deliver(node_id, body)
        elif kind is InnerType.PROBE and not relayed:
            self._send_raw(peer.cipher.seal(bytes([InnerType.PROBE_ACK]) + body), src)
        elif kind is InnerType.PROBE_ACK:
            peer.acks_recv += 1
        self._maybe_answer(peer, now)

    def _direct_receipt(self, peer: Peer, src: Addr, now: float, *, answered: bool) -> None:
        mgr = self.manager
        node_id = peer.node_id
        peer.direct_recv += 1
        self.direct_in += 1
        if answered and peer.reason in HEURISTIC_REASONS and mgr.is_relay_pinned(node_id):
            # spec §10 D19: only an answer to our own probe shows that our direct
            # sends arrive again; the peer's frames alone prove one direction only
            mgr.unpin_relay_peer(node_id)
        cleared = mgr.clear_relay_on_direct(node_id, src)
        mgr.record_direct_recv(node_id, now)
        self.peers.set_addr(peer, src)
        if cleared:
            peer.next_probe_at = None
            peer.probe_backoff = 0.0
            self._event(peer, Path.DIRECT, PathReason.DIRECT_RESTORED, f"from {src[0]}:{src[1]}")
        if peer.dial_deadline is not None:
            self._end_dial(peer)  # the peer answered on the direct path: it is open

    def _maybe_answer(self, peer: Peer, now: float) -> None:
        """Keep the peer's receipt times fresh when traffic is one-way."""
        last = self.manager.last_outbound_send(peer.node_id)
        if last is None or now - last > self.manager.config.blackhole_threshold / 2:
            self._write(peer, _KEEPALIVE)

    # -- errors reported by the kernel ------------------------------------------

    def on_icmp_error(self, dst: Addr, err: OSError) -> None:
        """An ICMP error for a datagram we sent to ``dst`` (spec §10 D20)."""
        peer = self.peers.by_addr(dst)
        if peer is None or self.manager.is_from_beacon(dst):
            return  # relay peers are aliased to the beacon; its errors are not theirs
        flipped, _ = self.manager.handle_send_error(peer.node_id, err)
        if flipped:
            self._event(peer, Path.RELAY, PathReason.ICMP_UNREACHABLE, str(err))
            self._schedule_probe(peer, self._clock(), reset=True)

    # -- timers ---------------------------------------------------------------

    def tick(self) -> None:
        """Periodic upkeep: dial timeouts, re-probes, keepalives, refresh, expiry."""
        now = self._clock()
        cfg = self.config
        mgr = self.manager
        for sender in self._waiting.waiting_senders():
            # frames held while a failed lookup was rate-limited: ask again (or drop them)
            self._waiting.ask(sender, now)
        for peer in self.peers.values():
            node_id = peer.node_id
            if now - peer.last_used > cfg.peer_idle_timeout:
                self.remove_peer(node_id)
                continue
            relay = mgr.is_relay_peer(node_id)
            if relay and peer.path is Path.DIRECT:
                # the Manager flipped it outside a write (e.g. a blackhole check)
                self._event(peer, Path.RELAY, PathReason.BLACKHOLE)
            if peer.dial_deadline is not None:
                if relay:  # relayed meanwhile (e.g. the peer reached us through the beacon)
                    self._end_dial(peer)
                elif now >= peer.dial_deadline:
                    mgr.set_relay_peer(node_id, True)
                    self._event(peer, Path.RELAY, PathReason.DIAL_FAILURE, "no direct answer")
                    self._schedule_probe(peer, now, reset=True)
                    self._end_dial(peer)
                elif now >= peer.dial_probe_at:
                    self._probe(peer)  # the peer's NAT may have opened since the last try
                    peer.dial_probe_at = now + cfg.dial_probe_interval
            if peer.path is Path.RELAY and peer.reason in HEURISTIC_REASONS:
                if peer.next_probe_at is None:
                    self._schedule_probe(peer, now, reset=True)
                elif now >= peer.next_probe_at:
                    self._punch(peer)
                    self._schedule_probe(peer, now, reset=False)
            last = mgr.last_outbound_send(node_id)
            if last is None or now - last >= cfg.keepalive_interval:
                self._write(peer, _KEEPALIVE)
            if now - peer.last_resolved >= cfg.peer_refresh_interval:
                self._waiting.ask(node_id, now)

    def _schedule_probe(self, peer: Peer, now: float, *, reset: bool) -> None:
        cfg = self.config
        if reset or peer.probe_backoff <= 0:
            peer.probe_backoff = cfg.probe_initial_interval
        else:
            peer.probe_backoff = min(peer.probe_backoff * 2, cfg.probe_max_interval)
        peer.next_probe_at = now + peer.probe_backoff

    def _event(self, peer: Peer, path: Path, reason: PathReason, detail: str = "") -> None:
        peer.record(self._clock(), path, reason, detail)
        self.path_changes[reason] += 1
        _log.info(
            "peer_path_changed",
            extra={
                "peer": peer.node_id,
                "path": path.value,
                "reason": reason.value,
                "detail": detail,
            },
        )

    # -- operator actions -----------------------------------------------------

    def set_relay(self, node_id: int, relay: bool, pinned: bool) -> bool:
        """Force a peer's path; False when the peer is unknown."""
        peer = self.peers.get(node_id)
        if peer is None:
            return False
        if pinned or not relay:
            self.manager.set_relay_peer_pinned(node_id, relay)
        else:
            self.manager.set_relay_peer(node_id, True)
            self.manager.unpin_relay_peer(node_id)  # "unpinned" means it: drop an earlier pin
        detail = "pinned" if pinned and relay else ""
        self._event(peer, Path.RELAY if relay else Path.DIRECT, PathReason.OPERATOR, detail)
        if not relay:
            self._punch(peer)
        return True

    def punch(self, node_id: int) -> bool:
        """Request a hole punch and probe the peer now; False when unknown."""
        peer = self.peers.get(node_id)
        if peer is None:
            return False
        self._punch(peer)
        return True

    def remove_peer(self, node_id: int) -> bool:
        """Forget a peer entirely (also its Manager state); False when unknown."""
        self._waiting.forget(node_id)
        self.manager.remove_peer(node_id)
        peer = self.peers.remove(node_id)
        if peer is None:
            return False
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
