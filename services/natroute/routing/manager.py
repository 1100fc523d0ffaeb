"""The routing Manager: per-peer relay/direct state and the send decisions.

Behaviour: docs/protocol.md, "The routing Manager" and its subsections (the
quoted titles below); decisions on the seed's weak spots: docs/decisions.md.

Invariants:

* One lock, a leaf lock: while it is held nothing outside the Manager is
  called — no socket sends, no ``local_node_id_fn``, no caller counters, no
  resolver, no logging ("Threads and time"). Every method snapshots under the lock,
  releases, then acts.
* Time comes only from the injected ``clock`` (monotonic seconds); callers
  pass timestamps from the same clock.
* ``relay_peers`` entries are set to False rather than deleted; only
  ``remove_peer`` frees a relay-cap slot ("Caps", D4).
* Every per-peer map is bounded: the relay map by ``max_relay_peers`` on the
  paths network input drives, the others by ``max_peer_state`` (D17).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from .addr import MAX_NODE_ID, addr_equal, canonical_ip, check_node_id
from .config import ManagerConfig
from .constants import PUNCH_PAYLOAD
from .errors import (
    NoAddressError,
    SendError,
    SocketNotSetError,
    UsageError,
    WireError,
    is_icmp_unreachable,
)
from .resolve import Resolver, resolve_udp_addr
from .types import (
    Addr,
    BlackholeCheck,
    CounterTarget,
    LocalNodeIDFn,
    PeerRouting,
    RelayAdmission,
    SendErrorCount,
    SendOutcome,
    SocketSender,
)
from .wire import Discover, PunchRequest, decode_endpoint, encode_message, encode_relay

__all__ = ["Manager", "PeerRouting", "is_icmp_unreachable"]  # the last two re-exported

_log = logging.getLogger(__name__)

_UNSPECIFIED = frozenset({"0.0.0.0", "::"})
_RELAYED = BlackholeCheck(True, False, 0.0, 0)
_NO_MISS = BlackholeCheck(False, False, 0.0, 0)


class Manager:
    """Owns the L4 routing state of one node (docs/protocol.md, "The routing Manager").

    Args:
        clock: monotonic seconds; the same clock callers use for timestamps.
        config: thresholds and caps; defaults to the seed's constants.
        resolver: turns ``host:port`` into an address for ``set_beacon_addr``.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        config: ManagerConfig | None = None,
        *,
        resolver: Resolver = resolve_udp_addr,
    ) -> None:
        self._clock = clock
        self._config = config or ManagerConfig()
        self._resolver = resolver
        self._lock = threading.Lock()
        self._sock: SocketSender | None = None
        self._beacon: Addr | None = None
        self._node_id_fn: LocalNodeIDFn | None = None
        self._relay: dict[int, bool] = {}
        self._pinned: dict[int, bool] = {}
        self._misses: dict[int, int] = {}
        self._clears: dict[int, int] = {}
        self._send_errs: dict[int, int] = {}
        self._last_direct: dict[int, float] = {}
        self._last_out: dict[int, float] = {}
        self._first_out: dict[int, float] = {}
        self._untracked = 0

    @property
    def config(self) -> ManagerConfig:
        """The thresholds and caps in force."""
        return self._config

    # -- wiring ----------------------------------------------------------

    def set_socket(self, sock: SocketSender | None) -> None:
        """Wire (or unwire, with None) the send primitive."""
        with self._lock:
            self._sock = sock

    def set_local_node_id_fn(self, fn: LocalNodeIDFn | None) -> None:
        """Set the callable that returns our own node ID (0 when unset)."""
        with self._lock:
            self._node_id_fn = fn

    def _local_node_id(self) -> int:
        with self._lock:
            fn = self._node_id_fn
        return fn() if fn is not None else 0

    def set_beacon_addr(self, addr: str) -> None:
        """Resolve ``host:port`` and make it the beacon; unchanged on failure.

        Raises:
            ResolveError: empty (docs/decisions.md D18), malformed or unresolvable.
        """
        resolved = self._resolver(addr)
        with self._lock:
            self._beacon = resolved

    def set_beacon_addr_udp(self, addr: Addr | None) -> None:
        """Store an already-resolved beacon address; None clears the beacon."""
        with self._lock:
            self._beacon = addr

    def beacon_addr(self) -> Addr | None:
        """The current beacon address, or None."""
        with self._lock:
            return self._beacon

    def is_from_beacon(self, frm: Addr | None) -> bool:
        """True iff ``frm`` is the beacon's IP (v4 == mapped v6) and port."""
        with self._lock:
            beacon = self._beacon
        return addr_equal(frm, beacon)

    # -- relay flag and pin, receipts ("Relay flag and pin", "Relay receipts") --

    def set_relay_peer(self, node_id: int, relay: bool) -> None:
        """Set the relay flag, leaving the pin as it is (no cap check)."""
        check_node_id(node_id)
        with self._lock:
            self._relay[node_id] = relay

    def set_relay_peer_pinned(self, node_id: int, relay: bool) -> None:
        """Pin the peer to relay (True), or unpin it and clear its flag (False)."""
        check_node_id(node_id)
        with self._lock:
            self._relay[node_id] = relay
            if relay:
                self._pinned[node_id] = True
            else:
                self._pinned.pop(node_id, None)

    def unpin_relay_peer(self, node_id: int) -> None:
        """Drop the pin but keep the relay flag (docs/decisions.md D19).

        Traffic stays on the relay until direct receipts clear the flag.
        """
        check_node_id(node_id)
        with self._lock:
            self._pinned.pop(node_id, None)

    def is_relay_peer(self, node_id: int) -> bool:
        """The stored relay flag (False if absent)."""
        with self._lock:
            return self._relay.get(node_id, False)

    def is_relay_pinned(self, node_id: int) -> bool:
        """The stored pin (False if absent); may be True while the flag is False."""
        with self._lock:
            return self._pinned.get(node_id, False)

    def relay_peer_ids(self) -> list[int]:
        """IDs whose relay flag is True, ascending."""
        with self._lock:
            return sorted(k for k, v in self._relay.items() if v)

    def relay_peer_count(self) -> int:
        """Keys in the relay map, cleared (False) entries included (docs/decisions.md D4)."""
        with self._lock:
            return len(self._relay)

    def admit_relay_from_beacon(self, node_id: int) -> bool:
        """Relay proven to work for this peer: set flag and pin ("Relay receipts").

        Returns False, changing nothing, when the peer has no relay entry yet
        and the relay map is at its cap.
        """
        check_node_id(node_id)
        with self._lock:
            if node_id not in self._relay and len(self._relay) >= self._config.max_relay_peers:
                return False
            self._relay[node_id] = True
            self._pinned[node_id] = True
            return True

    def mark_relay_activated_if_had_crypto(self, src: int, had_crypto: bool) -> RelayAdmission:
        """Account for a RelayDeliver from ``src`` ("Relay receipts").

        Returns:
            ``RelayAdmission(admitted, newly_activated, should_alias)``.
            Without a crypto session nothing changes and the frame is admitted.
        """
        check_node_id(src)
        if not had_crypto:
            return RelayAdmission(True, False, False)
        with self._lock:
            was_relay = self._relay.get(src, False)
            if not was_relay and len(self._relay) >= self._config.max_relay_peers:
                return RelayAdmission(False, False, False)
            self._relay[src] = True
            return RelayAdmission(True, not was_relay, True)

    def clear_relay_on_direct(self, node_id: int, frm: Addr | None) -> bool:
        """Account for an authenticated frame from ``frm`` ("Direct receipts and clears").

        Resets the blackhole miss count; for an unpinned relay peer a direct
        source counts towards clearing the flag. A missing source, port 0 or
        an unspecified IP (the ``0.0.0.0:0`` placeholder of relayed frames
        when no beacon is set, docs/decisions.md D21) changes nothing.

        Returns:
            True when this call cleared the relay flag.
        """
        check_node_id(node_id)
        if frm is None or frm[1] == 0 or canonical_ip(frm[0]) in _UNSPECIFIED:
            return False
        with self._lock:
            if not self._track(self._misses, node_id):
                return False
            self._misses[node_id] = 0
            if addr_equal(frm, self._beacon):
                return False
            if not self._relay.get(node_id, False) or self._pinned.get(node_id, False):
                return False
            clears = self._clears.get(node_id, 0) + 1
            if clears >= self._config.direct_clears_required:
                self._relay[node_id] = False
                self._clears[node_id] = 0
                return True
            self._clears[node_id] = clears
            return False

    # -- timestamps and counters ------------------------------------------

    def _track(self, table: dict[int, int] | dict[int, float], node_id: int) -> bool:
        """May ``table`` hold ``node_id``? False (and counted) past the cap. Locked."""
        if node_id in table or len(table) < self._config.max_peer_state:
            return True
        self._untracked += 1
        return False

    def record_direct_recv(self, node_id: int, t: float) -> None:
        """Stamp a direct receipt; ends the first-send baseline."""
        check_node_id(node_id)
        with self._lock:
            if self._track(self._last_direct, node_id):
                self._last_direct[node_id] = t
            self._first_out.pop(node_id, None)

    def has_direct_recv(self, node_id: int) -> bool:
        """Whether a direct receipt was ever recorded for the peer."""
        with self._lock:
            return node_id in self._last_direct

    def last_direct_recv(self, node_id: int) -> float | None:
        """The last direct receipt, or None."""
        with self._lock:
            return self._last_direct.get(node_id)

    def _record_send_locked(self, node_id: int, t: float) -> None:
        if self._track(self._last_out, node_id):
            self._last_out[node_id] = t
        if node_id not in self._first_out and self._track(self._first_out, node_id):
            self._first_out[node_id] = t

    def record_outbound_send(self, node_id: int, t: float) -> None:
        """Stamp a successful send; the first one is the blackhole baseline."""
        check_node_id(node_id)
        with self._lock:
            self._record_send_locked(node_id, t)

    def last_outbound_send(self, node_id: int) -> float | None:
        """The last successful send, or None."""
        with self._lock:
            return self._last_out.get(node_id)

    def send_err_count(self, node_id: int) -> int:
        """ICMP-unreachable errors counted since the last clear."""
        with self._lock:
            return self._send_errs.get(node_id, 0)

    def clear_send_err_count(self, node_id: int) -> None:
        """Forget the peer's ICMP errors (an authenticated inbound frame arrived)."""
        with self._lock:
            self._send_errs.pop(node_id, None)

    def blackhole_miss_count(self, node_id: int) -> int:
        """Current blackhole miss count."""
        with self._lock:
            return self._misses.get(node_id, 0)

    # -- heuristics ("Blackhole heuristic", "ICMP errors") ----------------

    def _maybe_flip_locked(self, node_id: int, now: float) -> BlackholeCheck:
        if self._relay.get(node_id, False):
            return _RELAYED
        if self._beacon is None:
            return _NO_MISS
        base = self._last_direct.get(node_id)
        if base is None:
            base = self._first_out.get(node_id)
            if base is None:
                return _NO_MISS
        silent_for = now - base
        if silent_for <= self._config.blackhole_threshold:
            return _NO_MISS
        if not self._track(self._misses, node_id):
            return _NO_MISS
        misses = self._misses.get(node_id, 0) + 1
        if misses >= self._config.blackhole_misses_required:
            self._relay[node_id] = True
            self._pinned[node_id] = True
            self._misses[node_id] = 0
            return BlackholeCheck(True, True, silent_for, misses)
        self._misses[node_id] = misses
        return BlackholeCheck(False, False, silent_for, misses)

    def maybe_flip_blackhole(self, node_id: int) -> BlackholeCheck:
        """Evaluate the blackhole heuristic now ("Blackhole heuristic").

        Returns:
            ``BlackholeCheck(should_relay, flipped, silent_for, misses)``:
            whether the peer is relay now, whether this call flipped (and
            pinned) it, the silence in seconds and the miss count when a miss
            was counted.
        """
        check_node_id(node_id)
        now = self._clock()
        with self._lock:
            return self._maybe_flip_locked(node_id, now)

    def _count_send_error_locked(self, node_id: int) -> SendErrorCount:
        if not self._track(self._send_errs, node_id):
            return SendErrorCount(False, 0)
        count = self._send_errs.get(node_id, 0) + 1
        if (
            count >= self._config.send_err_threshold
            and not self._relay.get(node_id, False)
            and len(self._relay) < self._config.max_relay_peers
        ):
            self._relay[node_id] = True
            self._pinned[node_id] = True
            self._send_errs[node_id] = 0
            return SendErrorCount(True, count)
        self._send_errs[node_id] = count
        return SendErrorCount(False, count)

    def handle_send_error(self, node_id: int, err: BaseException | None) -> SendErrorCount:
        """Count an ICMP-unreachable error; flip to pinned relay at the threshold.

        Returns:
            ``SendErrorCount(flipped, errors)``; ``(False, 0)`` with no change
            for errors that are not ICMP-unreachable ("ICMP errors").
        """
        check_node_id(node_id)
        if not is_icmp_unreachable(err):
            return SendErrorCount(False, 0)
        with self._lock:
            return self._count_send_error_locked(node_id)

    # -- sending ("Sending a frame", "Registration and punches") ----------

    def write_frame(
        self, node_id: int, addr: Addr | None, frame: bytes, counters: CounterTarget | None = None
    ) -> SendOutcome:
        """Send a tunnel frame to a peer: relayed through the beacon or direct.

        Runs the blackhole check first (it may count a miss or flip and pin
        the peer). Relay path: ``05|our id|node_id|frame`` to the beacon.
        Direct path (not relay, or relay without a beacon): ``frame`` to
        ``addr``. On success bumps ``counters`` and records the send.

        Raises:
            NoAddressError: direct path and ``addr`` is None.
            SocketNotSetError: no socket wired.
            SendError: the socket refused the frame (an ``OSError`` with the
                socket's errno, its ``was_relay`` the path taken). Errors on
                the direct path are counted by ``handle_send_error``; errors
                towards the beacon are not charged to the peer (D20).
        """
        if type(node_id) is not int or not 0 <= node_id <= MAX_NODE_ID:
            raise UsageError(f"node ID out of range: {node_id!r}")
        now = self._clock()
        with self._lock:
            should_relay = self._maybe_flip_locked(node_id, now).should_relay
            beacon = self._beacon
            sock = self._sock
            fn = self._node_id_fn
        if should_relay and beacon is not None:
            data = encode_relay(fn() if fn is not None else 0, node_id, frame)
            dst = beacon
            relayed = True
        else:
            if addr is None:
                raise NoAddressError(node_id)
            data, dst, relayed = frame, addr, False
        if sock is None:
            raise SocketNotSetError()
        try:
            n = sock.sendto(data, dst)
        except OSError as exc:
            if not relayed:
                self.handle_send_error(node_id, exc)
            raise SendError(exc, was_relay=relayed) from exc
        if counters is not None:
            counters.pkts_sent += 1
            counters.bytes_sent += n
        with self._lock:
            self._record_send_locked(node_id, now)
        return SendOutcome(n, relayed)

    def _beacon_and_socket(self) -> tuple[Addr, SocketSender] | None:
        with self._lock:
            beacon, sock = self._beacon, self._sock
        if beacon is None or sock is None:
            return None
        return beacon, sock

    def register_with_beacon(self) -> None:
        """Send Discover(our id) to the beacon: registration and NAT keepalive.

        Does nothing without a beacon or a socket.

        Raises:
            OSError: the send failed.
        """
        wired = self._beacon_and_socket()
        if wired is not None:
            beacon, sock = wired
            sock.sendto(encode_message(Discover(self._local_node_id())), beacon)

    def request_hole_punch(self, target: int) -> None:
        """Ask the beacon to send punch commands to us and ``target``.

        Does nothing without a beacon or a socket.

        Raises:
            OSError: the send failed.
        """
        check_node_id(target)
        wired = self._beacon_and_socket()
        if wired is not None:
            beacon, sock = wired
            sock.sendto(encode_message(PunchRequest(self._local_node_id(), target)), beacon)

    def handle_punch_command(self, data: bytes | None) -> int:
        """Execute a punch command body (``iplen|ip|port``, no type byte).

        Sends ``punch_repeat`` copies of ``PILP`` to the target, ignoring send errors.
        Malformed input is ignored. Callers pass only commands whose source is
        the beacon ("The caller's paths", D15).

        Returns:
            The number of punch datagrams sent.
        """
        try:
            target = decode_endpoint(data or b"")
        except WireError:
            return 0
        with self._lock:
            sock = self._sock
        if sock is None:
            return 0
        sent = 0
        for _ in range(self._config.punch_repeat):
            try:
                sock.sendto(PUNCH_PAYLOAD, target)
                sent += 1
            except OSError:
                continue
        if _log.isEnabledFor(logging.DEBUG):  # D26: never info per command
            _log.debug("punch_sent", extra={"target": target, "sent": sent})
        return sent

    # -- peer lifecycle ("Caps") ------------------------------------------

    def remove_peer(self, node_id: int) -> None:
        """Delete the peer from all eight per-peer maps."""
        with self._lock:
            for table in self._tables():
                table.pop(node_id, None)

    def _tables(self) -> tuple[dict[int, bool] | dict[int, int] | dict[int, float], ...]:
        return (
            self._relay,
            self._pinned,
            self._misses,
            self._clears,
            self._send_errs,
            self._last_direct,
            self._last_out,
            self._first_out,
        )

    def peer_state_entries(self) -> int:
        """Entries across the eight per-peer maps (leak detection)."""
        with self._lock:
            return sum(len(t) for t in self._tables())

    def peer_ids(self) -> list[int]:
        """Every node ID any per-peer map holds, ascending."""
        with self._lock:
            ids: set[int] = set()
            for table in self._tables():
                ids.update(table)
        return sorted(ids)

    def untracked_count(self) -> int:
        """How often a new peer was not tracked because a map was full (D17)."""
        with self._lock:
            return self._untracked

    def peer_routing(self, node_id: int) -> PeerRouting:
        """An immutable snapshot of one peer's routing state."""
        with self._lock:
            return PeerRouting(
                node_id=node_id,
                relay=self._relay.get(node_id, False),
                pinned=self._pinned.get(node_id, False),
                blackhole_misses=self._misses.get(node_id, 0),
                direct_clears=self._clears.get(node_id, 0),
                send_errors=self._send_errs.get(node_id, 0),
                last_direct_recv=self._last_direct.get(node_id),
                last_outbound_send=self._last_out.get(node_id),
                first_outbound_send=self._first_out.get(node_id),
            )
