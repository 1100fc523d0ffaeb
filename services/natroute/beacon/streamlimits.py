"""The stream relay's transport limits (settings ``stream_*``; beacon README "Stream relay")."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["StreamLimits"]


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """Limits of the WebSocket sessions of one beacon.

    Attributes:
        max_sessions: most sessions at once (hellos included); more are
            closed at once with ``busy`` (1013).
        hello_timeout: seconds a client has to answer the challenge.
        idle_timeout: a session that sends nothing for this long is closed
            (clients keep alive with ``01|node_id`` every 25 s).
        send_queue: messages queued per session; more are dropped and counted.
        trust_first_key: accept a hello on its signature alone when the
            registry cannot be asked (or none is configured), binding the key
            like a signed discover would; off = fail closed.
    """

    max_sessions: int = 1024
    hello_timeout: float = 5.0
    idle_timeout: float = 75.0
    send_queue: int = 256
    trust_first_key: bool = False

    def __post_init__(self) -> None:
        if self.max_sessions < 1 or self.send_queue < 1:
            raise ValueError("max_sessions and send_queue must be at least 1")
        if self.hello_timeout <= 0 or self.idle_timeout <= 0:
            raise ValueError("stream timeouts must be positive")
