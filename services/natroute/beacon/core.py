"""The beacon's sans-I/O core: every protocol decision lives here (spec §3).

:class:`BeaconCore` is fed one datagram at a time with its source address and
``now`` (monotonic seconds) and returns the datagrams to send as
``(bytes, destination)`` pairs. It never touches a socket, reads a clock
(the wall clock for signed discovers is injected), or raises on bad input:
anything it cannot act on is dropped and counted by :class:`DropReason`.

Behaviour per message (spec §3.4-§3.10, hardening from §10 D15/D27):

* Discover (0x01): always answered with a DiscoverReply carrying the
  observed source (node ID 0 included), except when rate-limited or when a
  new node meets a full table (no reply, spec §3.4). Non-zero IDs are
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

from natroute.routing.addr import canonical_ip, format_addr
from natroute.routing.errors import WireError
from natroute.routing.types import Addr
from natroute.routing.wire import (
    Discover,
    DiscoverReply,
    PunchCommand,
    PunchRequest,
    Relay,
    RelayDeliver,
    Sync,
    decode_message,
    encode_message,
    is_beacon_message,
)

from .auth import DISCOVER_AUTH_LEN, DiscoverAuthError, SignedDiscover, verify_discover
from .config import BeaconConfig
from .gossip import GossipTable, chunk_ids
from .prefix import source_key
from .ratelimit import RateLimiter
from .stats import BeaconSnapshot, Counters, DropReason
from .table import NodeEntry, NodeTable, Refusal

__all__ = ["BeaconCore", "Outgoing", "source_key"]

_log = logging.getLogger(__name__)

#: One datagram to send: (bytes, destination address).
Outgoing: TypeAlias = tuple[bytes, Addr]


class _Record(Enum):
    RECORDED = "recorded"
    REJECTED = "rejected"
    FULL = "full"


def _canonical(addr: Addr) -> Addr:
    return canonical_ip(addr[0]), addr[1]


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
        self._discover_limiter: RateLimiter[str] = RateLimiter(
            config.discover_limit, config.limiter_cap
        )
        self._punch_limiter: RateLimiter[str] = RateLimiter(config.punch_limit, config.limiter_cap)
        self._relay_packets: RateLimiter[Addr] = RateLimiter(
            config.relay_packet_limit, config.limiter_cap
        )
        self._relay_bytes: RateLimiter[Addr] = RateLimiter(
            config.relay_byte_limit, config.limiter_cap
        )
        self.counters = Counters()

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
        if not is_beacon_message(data):
            return self._drop(DropReason.NOT_BEACON_MESSAGE if data else DropReason.MALFORMED, src)
        try:
            msg = decode_message(data)
        except WireError:
            known = 0x01 <= data[0] <= 0x07
            return self._drop(DropReason.MALFORMED if known else DropReason.UNKNOWN_TYPE, src)
        src = _canonical(src)
        if type(msg) is Relay:
            return self._on_relay(msg, data, src, now)
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
        """The Sync datagrams for one gossip round (spec §3.10, every 10 s).

        Every peer gets this beacon's live node IDs, split over as many Sync
        datagrams as needed (at least one, possibly with no IDs).
        """
        peers = sorted(self.gossip.peers)
        if not peers:
            return []
        beacon_id = self.config.beacon_id
        chunks = list(chunk_ids(self.nodes.live_ids(now), self.config.sync_ids_per_datagram))
        datagrams = [encode_message(Sync(beacon_id, chunk)) for chunk in chunks or [()]]
        out = [(datagram, peer) for peer in peers for datagram in datagrams]
        self.counters.syncs_sent += len(out)
        return out

    def set_static_peers(self, addrs: Iterable[Addr]) -> None:
        """Replace the configured peer beacons (IP literal addresses)."""
        self.gossip.set_static_peers(_canonical(a) for a in addrs)

    def set_listed_peers(self, addrs: Iterable[Addr]) -> None:
        """Replace the peer beacons learnt from the registry (IP literals)."""
        self.gossip.set_listed_peers(_canonical(a) for a in addrs)

    def note_send_failed(self) -> None:
        """Count a datagram the shell could not send."""
        self.counters.drops[DropReason.SEND_FAILED] += 1

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
            relayed_packets=c.relayed_packets,
            relayed_bytes=c.relayed_bytes,
            forwarded_packets=c.forwarded_packets,
            forwarded_bytes=c.forwarded_bytes,
            syncs_received=c.syncs_received,
            syncs_sent=c.syncs_sent,
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
        """Spec §3.4: record (unless ID 0) and answer with the observed endpoint."""
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
        if signed is None:
            table.unbind(node_id, entry)  # non-strict: upstream's plain overwrite
        elif entry.pubkey != signed.pubkey:
            table.unbind(node_id, entry)  # non-strict: the new key replaces the old
            self._bind(node_id, entry, signed)
        else:
            self._bind(node_id, entry, signed)
        return _Record.RECORDED

    def _refused(self, refusal: Refusal, src: Addr) -> _Record:
        self._drop(DropReason.TABLE_FULL if refusal is Refusal.FULL else DropReason.QUOTA, src)
        return _Record.FULL

    def _bind(self, node_id: int, entry: NodeEntry, signed: SignedDiscover) -> None:
        self.nodes.bind(node_id, entry, signed.pubkey, signed.unix_time)
        self.counters.authenticated += 1

    def _on_punch(self, msg: PunchRequest, src: Addr, now: float) -> list[Outgoing]:
        """Spec §3.6: refresh the requester, then punch commands to both sides."""
        if not self._punch_limiter.allow(source_key(src[0]), now):
            return self._drop(DropReason.RATE_LIMITED_PUNCH, src)
        if msg.requester == 0:
            return self._drop(DropReason.PUNCH_REQUESTER_UNKNOWN, src)
        if self._record(msg.requester, src, now, None) is not _Record.RECORDED:
            return []
        target = self.nodes.get(msg.target, now)
        if target is None:
            return self._drop(DropReason.PUNCH_TARGET_UNKNOWN, src)
        self.counters.punches += 1
        return [
            (encode_message(PunchCommand(target.addr)), src),
            (encode_message(PunchCommand(src)), target.addr),
        ]

    def _on_relay(self, msg: Relay, data: bytes, src: Addr, now: float) -> list[Outgoing]:
        """Spec §3.8 with a per-source budget, strict sender check and hop limit 1."""
        size = len(msg.payload)
        if size > self.config.max_relay_payload:
            return self._drop(DropReason.RELAY_TOO_LARGE, src)
        from_peer = src in self.gossip.peers
        if not from_peer:
            if not (
                self._relay_packets.allow(src, now) and self._relay_bytes.allow(src, now, size)
            ):
                return self._drop(DropReason.RATE_LIMITED_RELAY, src)
            if self.config.strict:
                sender = self.nodes.get(msg.src, now)
                if sender is None or sender.addr != src:
                    return self._drop(DropReason.RELAY_SENDER_MISMATCH, src)
        dst = self.nodes.get(msg.dst, now)
        # A peer beacon announcing the node wins over a local entry the node has
        # stopped refreshing: it moved to that beacon (hand-off).
        peer = None if from_peer else self.gossip.lookup(msg.dst, now)
        if dst is not None and (peer is None or now - dst.last_seen <= self.config.handoff_after):
            c = self.counters
            c.relayed_packets += 1
            c.relayed_bytes += size
            return [(encode_message(RelayDeliver(msg.src, msg.payload)), dst.addr)]
        if from_peer:
            # Never forward a frame another beacon forwarded to us (§10 D27).
            return self._drop(DropReason.RELAY_HOP_LIMIT, src)
        if peer is None:
            return self._drop(DropReason.RELAY_UNKNOWN_DST, src)
        c = self.counters
        c.forwarded_packets += 1
        c.forwarded_bytes += size
        return [(data, peer)]

    def _on_sync(self, msg: Sync, src: Addr, now: float) -> list[Outgoing]:
        """Spec §3.10: gossip from a known peer beacon only (§10 D27)."""
        if src not in self.gossip.peers:
            return self._drop(DropReason.SYNC_UNKNOWN_PEER, src)
        self.counters.syncs_received += 1
        if self.gossip.apply(src, msg.node_ids, now):
            self._drop(DropReason.SYNC_GOSSIP_FULL, src)
        return []
