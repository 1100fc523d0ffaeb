"""Stream sessions as the core sees them: synthetic addresses and the core's answers.

A stream-attached node (beacon README "Stream relay") is an ordinary node
whose entry points at a session address ``(STREAM_HOST, n)`` instead of a UDP
source; the shell maps it to the WebSocket. ``STREAM_HOST`` is not an IP
literal (nor a valid host name), so a session address can never equal a UDP
source address. :class:`Attach` and :class:`StreamOutput` are what
:meth:`BeaconCore.stream_attach` and :meth:`BeaconCore.handle_stream_message`
return.
"""

from __future__ import annotations

from enum import Enum
from typing import Final, NamedTuple

from natroute.routing.types import Addr

__all__ = ["STREAM_HOST", "Attach", "AttachResult", "StreamOutput", "is_stream"]

#: Host part of a stream session's address. Not an IP literal (nor a valid
#: host name), so a session address never equals a UDP source address.
STREAM_HOST: Final = "~stream"


def is_stream(addr: Addr) -> bool:
    """True for a stream session's address (see :data:`STREAM_HOST`)."""
    return addr[0] == STREAM_HOST


class AttachResult(Enum):
    """Outcome of :meth:`BeaconCore.stream_attach`."""

    ATTACHED = "attached"
    TAKEOVER_REJECTED = "takeover_rejected"
    TABLE_FULL = "table_full"


class Attach(NamedTuple):
    """:meth:`BeaconCore.stream_attach`'s answer.

    Attributes:
        result: whether the session now holds the node's entry.
        replaced: the stream session that held it before (the shell closes it).
    """

    result: AttachResult
    replaced: Addr | None = None


class StreamOutput(NamedTuple):
    """:meth:`BeaconCore.handle_stream_message`'s answer.

    Attributes:
        out: datagrams to send.
        attached: False once the session no longer holds its node's entry
            (it moved to UDP or to another session): the shell closes it.
    """

    out: list[tuple[bytes, Addr]]
    attached: bool
