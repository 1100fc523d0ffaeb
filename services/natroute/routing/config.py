"""The Manager's tunables: a frozen dataclass defaulting to the seed's constants.

Services shorten the thresholds in tests and deployments (e.g. a 1 s
blackhole threshold in an end-to-end partition test) without touching the
constants themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

from .constants import (
    BLACKHOLE_MISSES_REQUIRED,
    DIRECT_BLACKHOLE_THRESHOLD,
    DIRECT_CLEARS_REQUIRED,
    MAX_PEER_STATE,
    MAX_RELAY_PEERS,
    PUNCH_REPEAT,
    SEND_ERR_THRESHOLD,
)
from .errors import UsageError

__all__ = ["ManagerConfig"]


@dataclass(frozen=True, slots=True)
class ManagerConfig:
    """Thresholds and caps of the routing Manager.

    Attributes:
        blackhole_threshold: silence on the direct path (seconds, strictly
            greater) that counts as one blackhole miss.
        blackhole_misses_required: misses that flip a peer to pinned relay.
        direct_clears_required: direct receipts that clear an unpinned relay flag.
        send_err_threshold: ICMP-unreachable errors that flip a peer to pinned relay.
        max_relay_peers: cap on keys in the relay map (docs/protocol.md, "Caps").
        max_peer_state: cap on node IDs tracked by each other per-peer map
            (docs/decisions.md D17); new peers past it are not tracked.
        punch_repeat: punch datagrams per punch command.
    """

    blackhole_threshold: float = DIRECT_BLACKHOLE_THRESHOLD
    blackhole_misses_required: int = BLACKHOLE_MISSES_REQUIRED
    direct_clears_required: int = DIRECT_CLEARS_REQUIRED
    send_err_threshold: int = SEND_ERR_THRESHOLD
    max_relay_peers: int = MAX_RELAY_PEERS
    max_peer_state: int = MAX_PEER_STATE
    punch_repeat: int = PUNCH_REPEAT

    def __post_init__(self) -> None:
        if not self.blackhole_threshold >= 0:
            raise UsageError(f"blackhole_threshold must be >= 0: {self.blackhole_threshold}")
        for name in (
            "blackhole_misses_required",
            "direct_clears_required",
            "send_err_threshold",
            "max_relay_peers",
            "max_peer_state",
            "punch_repeat",
        ):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise UsageError(f"{name} must be a positive int: {value!r}")
