"""The beacon's sans-I/O core: every protocol decision lives here.

:class:`BeaconCore` is fed one datagram at a time with its source address and
``now`` (monotonic seconds) and returns the datagrams to send as
``(bytes, destination)`` pairs. It never touches a socket, reads a clock
(the wall clock for signed discovers is injected), or raises on bad input:
anything it cannot act on is dropped and counted by :class:`DropReason`.

Behaviour per message (docs/protocol.md, "Beacon rules"; hardening from
docs/decisions.md D15, D27, D36):

* Discover (0x01): always answered with a DiscoverReply carrying the
  observed source (node ID 0 included), except when rate-limited or when a
  new node meets a full table (no reply). Non-zero IDs are
  recorded; in strict mode a live entry at another address is only taken
  over by a signed discover (:mod:`.auth`) that the bound key made.
* PunchRequest (0x03): records the requester like an unsigned discover,
  then sends PunchCommand to both sides; unknown target → dropped.
* Relay (0x05): ``05|src|dst|payload`` becomes ``06|src|payload`` to the
  destination's recorded address, or is forwarded unchanged to the peer
  beacon that announced it. Strict mode requires the claimed sender to be
  registered at the datagram's source. A relay that comes from a peer
  beacon is only ever delivered locally (hop limit 1), so inconsistent
  gossip cannot bounce a frame between beacons (D27).
* Sync (0x07): applied only when it comes from a known peer beacon.
* DiscoverReply, PunchCommand, RelayDeliver and unknown codes: dropped.

Addresses inside the core are canonical: IPv4-mapped IPv6 sources are
unwrapped on entry, so a plain tuple comparison is address equality.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from enum import Enum
from types import MappingProxyType
from typing import TypeAlias

from natroute._service.ratelimit import TokenBuckets
from natroute.routing.addr import canonical_ip, format_addr
from natroute.routing.errors import WireError
from natroute.routing.types import Addr
from natroute.routing.wire import (
    BEACON_MSG_LIMIT,
    MSG_DISCOVER,
    MSG_RELAY,
    RELAY_HEADER_LEN,
    Discover,
    DiscoverReply,
    PunchCommand,
    PunchRequest,
    Sync,
    decode_message,
    encode_message,
)

from .auth import DISCOVER_AUTH_LEN, DiscoverAuthError, SignedDiscover, verify_discover
from .config import BeaconConfig
from .gossip import GossipTable, chunk_ids
from .prefix import source_key
from .punch import (
    MSG_PUNCH_FORWARD,
    MSG_PUNCH_FORWARD_REPLY,
    PunchForward,
    decode_punch_forward,
    encode_punch_forward,
)
from .sessions import STREAM_HOST, Attach, AttachResult, StreamOutput, is_stream
from .stats import BeaconSnapshot, Counters, DropReason
from .table import NodeEntry, NodeTable, Refusal

__all__ = [
    "STREAM_HOST",
    "Attach",
    "AttachResult",
    "BeaconCore",
    "Outgoing",
    "StreamOutput",
    "is_stream",
    "source_key",
]

_log = logging.getLogger(__name__)

#: One datagram to send: (bytes, destination address).
Outgoing: TypeAlias = tuple[bytes, Addr]


class _Record(Enum):
    RECORDED = "recorded"
    REJECTED = "rejected"
    FULL = "full"


def _canonical(addr: Addr) -> Addr:
    # IPv4 text from a socket is canonical already; IPv6 may be IPv4-mapped.
    host = addr[0]
    return addr if ":" not in host else (canonical_ip(host), addr[1])


def _may_take_over(entry: NodeEntry, signed: SignedDiscover | None) -> bool:
    """Strict mode: a live entry moves only under the key that registered it.

    An entry registered without a key moves for nobody until it expires;
    one with a key only for a signature by that key with a time newer than
    the last accepted one, so a captured signed discover cannot be replayed
    from elsewhere.
    """
    return (
        signed is not None
        and entry.pubkey is not None
        and signed.pubkey == entry.pubkey
        and signed.unix_time > entry.auth_time
    )


class BeaconCore:
    """State and decisions of one beacon."""

    def __init__(self, config: BeaconConfig, *, wall_clock: Callable[[], float]) -> None:
        """Create a beacon with empty tables.

        Args:
            config: limits, TTLs and the beacon ID.
            wall_clock: Unix time in seconds, read only to check signed discovers.
        """
        self.config = config
        self._wall_clock = wall_clock
        self.nodes = NodeTable(
            config.node_cap, config.node_ttl, config.node_quota_host, config.node_quota_net
        )
        self.gossip = GossipTable(config.gossip_cap, config.gossip_ttl)
        cap = config.limiter_cap
        self._discover_limiter: TokenBuckets[str] = TokenBuckets(config.discover_limit, cap)
        self._punch_limiter: TokenBuckets[str] = TokenBuckets(config.punch_limit, cap)
        self._relay_packets: TokenBuckets[Addr] = TokenBuckets(config.relay_packet_limit, cap)
        self._relay_bytes: TokenBuckets[Addr] = TokenBuckets(config.relay_byte_limit, cap)
        self.counters = Counters()
        #: A node new to this beacon awaits an early gossip round.
        self.new_nodes = False
        self._last_gossip: float | None = None
        self._last_gossip_datagrams = 1

    # -- inputs from the shell -------------------------------------------------

    def handle_datagram(self, data: bytes, src: Addr, now: float) -> list[Outgoing]:
        """Process one datagram received from ``src`` at ``now``.

        Args:
            data: the datagram.
            src: its source address (an IP literal and a port).
            now: monotonic time in seconds.

        Returns:
            Datagrams to send, possibly none. Never raises for any ``data``.
        """
        self.counters.received += 1
        if data[:1] == b"\x05" and len(data) >= RELAY_HEADER_LEN:
            # The hot path: relay frames are handled on the raw bytes.
            return self._relay(data, _canonical(src), now)
        if not data or data[0] >= BEACON_MSG_LIMIT:
            return self._drop(DropReason.NOT_BEACON_MESSAGE if data else DropReason.MALFORMED, src)
        if data[0] in (MSG_PUNCH_FORWARD, MSG_PUNCH_FORWARD_REPLY):
            return self._on_punch_forward(data, _canonical(src), now)
        try:
            msg = decode_message(data)
        except WireError:
            known = 0x01 <= data[0] <= 0x07
            return self._drop(DropReason.MALFORMED if known else DropReason.UNKNOWN_TYPE, src)
        src = _canonical(src)
        if type(msg) is Discover:
            return self._on_discover(msg, src, now)
        if type(msg) is PunchRequest:
            return self._on_punch(msg, src, now)
        if type(msg) is Sync:
            return self._on_sync(msg, src, now)
        return self._drop(DropReason.UNEXPECTED_TYPE, src)

    def sweep(self, now: float) -> None:
        """Expire idle node and gossip entries and full rate-limit buckets."""
        expired = self.nodes.sweep(now)
        self.counters.expired_nodes += expired
        gossip_expired = self.gossip.sweep(now)
        for limiter in (self._discover_limiter, self._punch_limiter):
            limiter.sweep(now)
        self._relay_packets.sweep(now)
        self._relay_bytes.sweep(now)
        if expired or gossip_expired:
            _log.debug(
                "beacon_swept", extra={"expired_nodes": expired, "expired_gossip": gossip_expired}
            )

    def gossip_datagrams(self, now: float) -> list[Outgoing]:
        """The Sync datagrams for one gossip round (every 10 s).

        Every peer gets this beacon's live node IDs, split over as many Sync
        datagrams as needed (at least one, possibly with no IDs).
        """
        self.new_nodes = False
        self._last_gossip = now
        peers = sorted(self.gossip.peers)
        if not peers:
            return []
        beacon_id = self.config.beacon_id
        chunks = list(chunk_ids(self.nodes.live_ids(now), self.config.sync_ids_per_datagram))
        datagrams = [encode_message(Sync(beacon_id, chunk)) for chunk in chunks or [()]]
        self._last_gossip_datagrams = len(datagrams)
        out = [(datagram, peer) for peer in peers for datagram in datagrams]
        self.counters.syncs_sent += len(out)
        return out

    def early_gossip_datagrams(self, now: float) -> list[Outgoing]:
        """A gossip round now if a node is new since the last one and spacing allows.

        Peer beacons then know a new node well before the next timed round,
        so frames relayed to it through them are not dropped as
        ``relay_unknown_dst`` meanwhile. A round is a full Sync, as the timed
        one (peers replace what they knew from us), spaced by
        ``early_gossip_spacing`` per datagram it took, which bounds the cost
        on a large table.
        """
        spacing = self.config.early_gossip_spacing
        if not self.new_nodes or not spacing:
            return []
        last = self._last_gossip
        if last is not None and now - last < spacing * self._last_gossip_datagrams:
            return []
        self.counters.early_syncs += 1
        return self.gossip_datagrams(now)

    def set_static_peers(self, addrs: Iterable[Addr]) -> None:
        """Replace the configured peer beacons (IP literal addresses)."""
        self.gossip.set_static_peers(_canonical(a) for a in addrs)

    def set_listed_peers(self, addrs: Iterable[Addr]) -> None:
        """Replace the peer beacons learnt from the registry (IP literals)."""
        self.gossip.set_listed_peers(_canonical(a) for a in addrs)

    def note_send_failed(self, count: int = 1) -> None:
        """Count datagrams the shell could not send."""
        self.counters.drops[DropReason.SEND_FAILED] += count

    # -- stream sessions (beacon README "Stream relay") ------------------------

    def stream_attach(
        self,
        session: Addr,
        node_id: int,
        pubkey: bytes,
        peer_ip: str,
        now: float,
        *,
        authoritative: bool,
    ) -> Attach:
        """Record ``node_id`` at a stream session whose hello proved ``pubkey``.

        The session becomes the node's entry, like a signed discover from a
        new address: a live entry moves only under the key bound to it,
        unless ``authoritative`` (the registry confirmed ``pubkey`` is the
        node's key, so it wins over a squatter or an older key).

        Args:
            session: the session's address (host :data:`STREAM_HOST`).
            node_id: the node the hello named.
            pubkey: its verified Ed25519 key.
            peer_ip: the TCP peer's IP, charged to the node quotas.
            now: monotonic seconds.
            authoritative: ``pubkey`` is the registry's key for ``node_id``.
        """
        table = self.nodes
        ip = canonical_ip(peer_ip)
        entry = table.get(node_id, now)
        if entry is None:
            added = table.add(node_id, session, now, ip=ip, pubkey=pubkey)
            if isinstance(added, Refusal):
                self._refused(added, session)
                return Attach(AttachResult.TABLE_FULL)
            self.counters.registrations += 1
            self.new_nodes = True
            return Attach(AttachResult.ATTACHED)
        if entry.pubkey != pubkey and not authoritative:
            self._drop(DropReason.TAKEOVER_REJECTED, session)
            return Attach(AttachResult.TAKEOVER_REJECTED)
        before = entry.addr
        refused = table.move(node_id, entry, session, now, ip=ip)
        if refused is not None:
            self._refused(refused, session)
            return Attach(AttachResult.TABLE_FULL)
        if entry.pubkey != pubkey:
            table.unbind(node_id, entry)
            table.bind(node_id, entry, pubkey, -1)
        if before != session:
            self.counters.registrations += 1
        replaced = before if is_stream(before) and before != session else None
        return Attach(AttachResult.ATTACHED, replaced)

    def stream_detach(self, session: Addr, node_id: int) -> None:
        """A session closed: forget its node's entry unless it moved elsewhere."""
        self.nodes.remove(node_id, session)

    def handle_stream_message(
        self, session: Addr, node_id: int, data: bytes, now: float
    ) -> StreamOutput:
        """One binary message from an attached session of ``node_id``.

        ``05|src|dst|frame`` is relayed exactly as from UDP (``src`` must be
        the session's node, the session's own budgets apply);
        ``01|node_id`` refreshes the entry (the stream's keepalive; no reply).
        Anything else is dropped and counted.
        """
        self.counters.received += 1
        entry = self.nodes.get(node_id, now)
        if entry is None or entry.addr != session:
            return StreamOutput([], False)
        kind = data[0] if data else -1
        if kind == MSG_RELAY and len(data) >= RELAY_HEADER_LEN:
            if int.from_bytes(data[1:5], "big") != node_id:
                return StreamOutput(self._drop(DropReason.RELAY_SENDER_MISMATCH, session), True)
            return StreamOutput(self._relay(data, session, now), True)
        if kind == MSG_DISCOVER and len(data) >= 5 and int.from_bytes(data[1:5], "big") == node_id:
            if self._relay_packets.allow(session, now):
                self.nodes.touch(node_id, entry, now)
            return StreamOutput([], True)
        # A short frame, a keepalive for another ID, or not a beacon message at all.
        unexpected = 0 <= kind < BEACON_MSG_LIMIT and kind not in (MSG_RELAY, MSG_DISCOVER)
        reason = DropReason.UNEXPECTED_TYPE if unexpected else DropReason.MALFORMED
        return StreamOutput(self._drop(reason, session), True)

    def snapshot(self) -> BeaconSnapshot:
        """An immutable copy of the state the admin API shows."""
        c = self.counters
        return BeaconSnapshot(
            beacon_id=self.config.beacon_id,
            strict=self.config.strict,
            nodes=len(self.nodes),
            signed_nodes=self.nodes.signed,
            gossip_entries=len(self.gossip),
            peers=tuple(sorted(format_addr(p) for p in self.gossip.peers)),
            received=c.received,
            discovers=c.discovers,
            discover_replies=c.discover_replies,
            registrations=c.registrations,
            authenticated=c.authenticated,
            punches=c.punches,
            punches_forwarded=c.punches_forwarded,
            relayed_packets=c.relayed_packets,
            relayed_bytes=c.relayed_bytes,
            forwarded_packets=c.forwarded_packets,
            forwarded_bytes=c.forwarded_bytes,
            syncs_received=c.syncs_received,
            syncs_sent=c.syncs_sent,
            early_syncs=c.early_syncs,
            expired_nodes=c.expired_nodes,
            evicted_nodes=self.nodes.evictions,
            drops=MappingProxyType({r.value: n for r, n in c.drops.items()}),
        )

    # -- message handlers ------------------------------------------------------

    def _drop(self, reason: DropReason, src: Addr) -> list[Outgoing]:
        self.counters.drops[reason] += 1
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug("beacon_dropped", extra={"reason": reason.value, "src": format_addr(src)})
        return []

    def _on_discover(self, msg: Discover, src: Addr, now: float) -> list[Outgoing]:
        """Discover: record (unless ID 0) and answer with the observed endpoint."""
        self.counters.discovers += 1
        if not self._discover_limiter.allow(source_key(src[0]), now):
            return self._drop(DropReason.RATE_LIMITED_DISCOVER, src)
        if msg.node_id != 0:
            signed = self._verify(msg, src)
            if self._record(msg.node_id, src, now, signed) is _Record.FULL:
                return []
        self.counters.discover_replies += 1
        return [(encode_message(DiscoverReply(src)), src)]

    def _verify(self, msg: Discover, src: Addr) -> SignedDiscover | None:
        """A verified signature trailer, or None (other trailers are ignored)."""
        if len(msg.extra) != DISCOVER_AUTH_LEN:
            return None
        try:
            return verify_discover(
                msg.extra, msg.node_id, self._wall_clock(), self.config.auth_max_skew
            )
        except DiscoverAuthError:
            self._drop(DropReason.AUTH_INVALID, src)
            return None

    def _record(
        self, node_id: int, src: Addr, now: float, signed: SignedDiscover | None
    ) -> _Record:
        """Bind ``node_id`` to ``src`` if allowed (beacon README "Strict mode")."""
        table = self.nodes
        config = self.config
        entry = table.get(node_id, now)
        if entry is None:
            if signed is None and config.strict and config.require_signature:
                self._drop(DropReason.UNSIGNED_REFUSED, src)
                return _Record.REJECTED
            added = (
                table.add(node_id, src, now)
                if signed is None
                else table.add(node_id, src, now, pubkey=signed.pubkey, auth_time=signed.unix_time)
            )
            if isinstance(added, Refusal):
                return self._refused(added, src)
            self.counters.registrations += 1
            self.new_nodes = True
            if signed is not None:
                self.counters.authenticated += 1
            return _Record.RECORDED
        if entry.addr == src:
            # A keepalive from the registered address. A signature binds its key
            # the first time (the address is the credential of an unsigned entry).
            table.touch(node_id, entry, now)
            if signed is not None and entry.pubkey in (None, signed.pubkey):
                self._bind(node_id, entry, signed)
            return _Record.RECORDED
        if config.strict and not _may_take_over(entry, signed):
            self._drop(DropReason.TAKEOVER_REJECTED, src)
            return _Record.REJECTED
        refused = table.move(node_id, entry, src, now)
        if refused is not None:
            return self._refused(refused, src)
        self.counters.registrations += 1
        if signed is None or entry.pubkey != signed.pubkey:
            # non-strict: upstream's plain overwrite, or the new key replaces the old
            table.unbind(node_id, entry)
        if signed is not None:
            self._bind(node_id, entry, signed)
        return _Record.RECORDED

    def _refused(self, refusal: Refusal, src: Addr) -> _Record:
        self._drop(DropReason.TABLE_FULL if refusal is Refusal.FULL else DropReason.QUOTA, src)
        return _Record.FULL

    def _bind(self, node_id: int, entry: NodeEntry, signed: SignedDiscover) -> None:
        self.nodes.bind(node_id, entry, signed.pubkey, signed.unix_time)
        self.counters.authenticated += 1

    def _on_punch(self, msg: PunchRequest, src: Addr, now: float) -> list[Outgoing]:
        """PunchRequest: refresh the requester, then punch commands to both sides."""
        if not self._punch_limiter.allow(source_key(src[0]), now):
            return self._drop(DropReason.RATE_LIMITED_PUNCH, src)
        if msg.requester == 0:
            return self._drop(DropReason.PUNCH_REQUESTER_UNKNOWN, src)
        if self._record(msg.requester, src, now, None) is not _Record.RECORDED:
            return []
        target = self.nodes.get(msg.target, now)
        if target is None:
            peer = self.gossip.lookup(msg.target, now)
            if peer is None or msg.target == 0:  # no node is ever ID 0
                return self._drop(DropReason.PUNCH_TARGET_UNKNOWN, src)
            # the target lives at a peer beacon: it sends the target's command
            self.counters.punches_forwarded += 1
            forward = PunchForward(False, msg.requester, msg.target, src)
            return [(encode_punch_forward(forward), peer)]
        if is_stream(target.addr):
            return self._drop(DropReason.PUNCH_TARGET_STREAM, src)  # no UDP path to punch
        self.counters.punches += 1
        return [
            (encode_message(PunchCommand(target.addr)), src),
            (encode_message(PunchCommand(src)), target.addr),
        ]

    def _on_punch_forward(self, data: bytes, src: Addr, now: float) -> list[Outgoing]:
        """A punch request forwarded by a peer beacon, or its answer (:mod:`.punch`)."""
        if src not in self.gossip.peers:
            return self._drop(DropReason.FORWARD_UNKNOWN_PEER, src)
        try:
            msg = decode_punch_forward(data)
        except WireError:
            return self._drop(DropReason.MALFORMED, src)
        if not msg.reply:
            target = self.nodes.get(msg.target, now)
            if target is None or is_stream(target.addr):
                return self._drop(DropReason.PUNCH_TARGET_UNKNOWN, src)
            self.counters.punches += 1
            reply = PunchForward(True, msg.requester, msg.target, target.addr)
            return [
                (encode_message(PunchCommand(msg.endpoint)), target.addr),
                (encode_punch_forward(reply), src),
            ]
        requester = self.nodes.get(msg.requester, now)
        if requester is None or is_stream(requester.addr):
            return self._drop(DropReason.PUNCH_REQUESTER_UNKNOWN, src)
        return [(encode_message(PunchCommand(msg.endpoint)), requester.addr)]

    def _relay(self, data: bytes, src: Addr, now: float) -> list[Outgoing]:
        """Relay, on the raw ``05|src|dst|payload`` bytes (no decoding).

        A per-source budget, the strict sender check and hop limit 1 (
        D27). ``06|src|payload`` is built by slicing, never by decoding.
        """
        size = len(data) - RELAY_HEADER_LEN
        config = self.config
        if size > config.max_relay_payload:
            return self._drop(DropReason.RELAY_TOO_LARGE, src)
        nodes = self.nodes
        from_peer = src in self.gossip.peers
        if not from_peer:
            if not (
                self._relay_packets.allow(src, now) and self._relay_bytes.allow(src, now, size)
            ):
                return self._drop(DropReason.RATE_LIMITED_RELAY, src)
            if config.strict:
                sender = nodes.get(int.from_bytes(data[1:5], "big"), now)
                if sender is None or sender.addr != src:
                    return self._drop(DropReason.RELAY_SENDER_MISMATCH, src)
        dst_id = int.from_bytes(data[5:9], "big")
        dst = nodes.get(dst_id, now)
        # A peer beacon announcing the node wins over a local entry the node has
        # stopped refreshing: it moved to that beacon (hand-off).
        peer = None if from_peer else self.gossip.lookup(dst_id, now)
        c = self.counters
        if dst is not None and (peer is None or now - dst.last_seen <= config.handoff_after):
            c.relayed_packets += 1
            c.relayed_bytes += size
            view = memoryview(data)
            return [(b"".join((b"\x06", view[1:5], view[RELAY_HEADER_LEN:])), dst.addr)]
        if from_peer:
            # Never forward a frame another beacon forwarded to us (D27).
            return self._drop(DropReason.RELAY_HOP_LIMIT, src)
        if peer is None:
            return self._drop(DropReason.RELAY_UNKNOWN_DST, src)
        c.forwarded_packets += 1
        c.forwarded_bytes += size
        return [(data, peer)]

    def _on_sync(self, msg: Sync, src: Addr, now: float) -> list[Outgoing]:
        """Sync: gossip from a known peer beacon only (D27)."""
        if src not in self.gossip.peers:
            return self._drop(DropReason.SYNC_UNKNOWN_PEER, src)
        self.counters.syncs_received += 1
        if self.gossip.apply(src, msg.node_ids, now):
            self._drop(DropReason.SYNC_GOSSIP_FULL, src)
        return []
