"""The registry's JSON wire models (pydantic), shared by the app and the clients.

Request models validate every field strictly (no type coercion, unknown keys
refused) and never rewrite what they validate: signatures cover the fields
exactly as sent (see :mod:`natroute.registry.signing`). Response models are
plain data; the clients parse responses with the same classes.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Final, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from natroute.routing.addr import MAX_NODE_ID, split_host_port

from .signing import KEY_LEN, SIGNATURE_LEN, b64decode_exact

__all__ = [
    "MAX_ADDR_LEN",
    "MAX_LAN_ADDRS",
    "B64Key",
    "B64Signature",
    "BeaconEntry",
    "BeaconListResponse",
    "BeaconRegisterRequest",
    "BeaconRegisterResponse",
    "ErrorBody",
    "ErrorDetail",
    "HeartbeatRequest",
    "HeartbeatResponse",
    "HostPort",
    "IpPort",
    "NodeView",
    "RegisterRequest",
    "RegisterResponse",
    "RelayOnlyRequest",
    "RelayOnlyResponse",
    "check_host_port",
    "check_ip_port",
]

#: Longest accepted ``host:port`` text (a DNS name is at most 253 characters).
MAX_ADDR_LEN: Final = 300
#: Most LAN addresses a node may register.
MAX_LAN_ADDRS: Final = 16
_MAX_TS_US: Final = 2**63 - 1
_DNS_LABEL: Final = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def _split(text: str) -> tuple[str, int]:
    host, port = split_host_port(text)
    if not host:
        raise ValueError(f"missing host in address {text!r}")
    if not 1 <= port <= 0xFFFF:
        raise ValueError(f"port must be 1..65535 in address {text!r}")
    return host, port


def check_ip_port(text: str) -> str:
    """Validate ``ip:port`` / ``[v6]:port`` with an IP literal; returns ``text``.

    Raises:
        ValueError: anything else (host names, zones, port 0, no port).
    """
    host, _ = _split(text)
    if "%" in host:
        raise ValueError(f"zoned IPv6 addresses are not reachable from peers: {text!r}")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError as exc:
        raise ValueError(f"host must be an IP literal in address {text!r}") from exc
    if (ip.version == 6) != text.startswith("["):
        raise ValueError(f"IPv6 hosts must be bracketed (and only they) in {text!r}")
    return text


def check_host_port(text: str) -> str:
    """Validate ``host:port`` where host is an IP literal or a DNS name.

    Raises:
        ValueError: unparseable, empty host, bad DNS name, port outside 1..65535.
    """
    host, _ = _split(text)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        name = host.removesuffix(".")
        if (
            text.startswith("[")
            or len(name) > 253
            or not all(_DNS_LABEL.match(label) for label in name.split("."))
        ):
            raise ValueError(f"host is neither an IP literal nor a DNS name in {text!r}") from None
        return text
    return check_ip_port(text)


def _check_key(text: str) -> str:
    b64decode_exact(text, KEY_LEN)
    return text


def _check_signature(text: str) -> str:
    b64decode_exact(text, SIGNATURE_LEN)
    return text


#: ``ip:port`` with an IP literal (a node's endpoint or LAN address).
IpPort = Annotated[str, Field(max_length=MAX_ADDR_LEN), AfterValidator(check_ip_port)]
#: ``host:port`` with an IP literal or DNS name (a beacon address).
HostPort = Annotated[str, Field(max_length=MAX_ADDR_LEN), AfterValidator(check_host_port)]
#: A 32-byte public key in standard base64.
B64Key = Annotated[str, Field(max_length=64), AfterValidator(_check_key)]
#: A 64-byte Ed25519 signature in standard base64.
B64Signature = Annotated[str, Field(max_length=128), AfterValidator(_check_signature)]
_NodeId = Annotated[int, Field(ge=1, le=MAX_NODE_ID)]
_TimestampUs = Annotated[int, Field(ge=0, le=_MAX_TS_US)]

_STRICT: Final = ConfigDict(strict=True, extra="forbid")


class RegisterRequest(BaseModel):
    """``POST /v1/nodes``: a node announces itself (signed, action ``register``)."""

    model_config = _STRICT

    ed25519_public_key: B64Key
    x25519_public_key: B64Key | None = None
    endpoint: IpPort | None = None
    lan_addrs: list[IpPort] = Field(default_factory=list, max_length=MAX_LAN_ADDRS)
    relay_only: bool = False
    timestamp_us: _TimestampUs
    signature: B64Signature


class RegisterResponse(BaseModel):
    """Answer to a registration: the node's stable ID and how to stay alive."""

    node_id: int
    relay_only: bool
    ttl: int
    heartbeat_interval: int


class HeartbeatRequest(BaseModel):
    """``POST /v1/nodes/{id}/heartbeat`` (signed, action ``heartbeat``).

    ``endpoint`` / ``relay_only`` left out (or null) keep their stored value.
    """

    model_config = _STRICT

    endpoint: IpPort | None = None
    relay_only: bool | None = None
    timestamp_us: _TimestampUs
    signature: B64Signature


class HeartbeatResponse(BaseModel):
    """Answer to a heartbeat."""

    node_id: int
    relay_only: bool
    ttl: int


class NodeView(BaseModel):
    """``GET /v1/nodes/{id}`` (spec §4.3); ``None`` fields are left out on the wire.

    For a relay-only node ``endpoint`` is a beacon address (or absent when no
    beacon is known), ``lan_addrs`` is absent and ``relay_only`` is ``true``;
    for a normal node ``relay_only`` is absent.
    """

    node_id: int
    endpoint: str | None = None
    lan_addrs: list[str] | None = None
    relay_only: Literal[True] | None = None
    ed25519_public_key: str
    x25519_public_key: str | None = None
    last_seen: float
    key_age_days: int


class NodeListResponse(BaseModel):
    """``GET /v1/nodes`` (operator token): live nodes, as resolve shows them."""

    nodes: list[NodeView]


class BeaconRegisterRequest(BaseModel):
    """``POST /v1/beacons`` (operator token): a beacon (re-)registers (spec §4.2)."""

    model_config = _STRICT

    beacon_id: _NodeId
    addr: HostPort


class BeaconRegisterResponse(BaseModel):
    """Answer to a beacon registration; re-register well within ``ttl`` seconds."""

    beacon_id: int
    addr: str
    ttl: int


class BeaconEntry(BaseModel):
    """One live beacon in ``GET /v1/beacons``."""

    id: int
    addr: str


class BeaconListResponse(BaseModel):
    """``GET /v1/beacons``: live beacons only, ordered by ID."""

    beacons: list[BeaconEntry]


class RelayOnlyRequest(BaseModel):
    """``PUT /v1/nodes/{id}/relay_only``: force on/off, or ``null`` to clear the force."""

    model_config = _STRICT

    force: bool | None


class RelayOnlyResponse(BaseModel):
    """The node's effective ``relay_only`` and the operator's force, if any."""

    node_id: int
    relay_only: bool
    forced: bool | None = None


class ErrorDetail(BaseModel):
    """Machine-readable ``code`` (snake_case) and a human ``message``."""

    code: str
    message: str


class ErrorBody(BaseModel):
    """Every non-2xx response: ``{"error": {"code": ..., "message": ...}}``."""

    error: ErrorDetail
