"""The registry's JSON wire models (pydantic), shared by the app and the clients.

Request models validate every field strictly (no type coercion, unknown keys
refused) and never rewrite what they validate: signatures cover the fields
exactly as sent (see :mod:`natroute.registry.signing`). Response models are
plain data; the clients parse responses with the same classes.

Node addresses (``endpoint``, ``lan_addrs``, candidate ``addr``) are IP
literals that a peer can send a datagram to: multicast, the limited broadcast
address and unspecified addresses are refused here, always; loopback and
link-local addresses are refused by the app unless the registry allows them
(dev mode), see :func:`address_problem`.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Final, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from natroute._service.http import ErrorBody, ErrorDetail
from natroute.routing.addr import MAX_NODE_ID, split_host_port

from .signing import KEY_LEN, SIGNATURE_LEN, b64decode_exact

__all__ = [
    "MAX_ADDR_LEN",
    "MAX_CANDIDATES",
    "MAX_LAN_ADDRS",
    "NAME_PATTERN",
    "B64Key",
    "B64Signature",
    "BeaconEntry",
    "BeaconListResponse",
    "BeaconRegisterRequest",
    "BeaconRegisterResponse",
    "CandidateEntry",
    "CandidateKind",
    "ErrorBody",
    "ErrorDetail",
    "HeartbeatRequest",
    "HeartbeatResponse",
    "IpPort",
    "NameOrIpPort",
    "NodeListResponse",
    "NodeName",
    "NodeView",
    "RegisterRequest",
    "RegisterResponse",
    "RelayOnlyRequest",
    "RelayOnlyResponse",
    "StreamUrl",
    "Transport",
    "address_problem",
    "beacon_entry",
    "check_ip_port",
    "check_name_or_ip_port",
    "check_stream_url",
]

#: Longest accepted ``host:port`` text (a DNS name is at most 253 characters).
MAX_ADDR_LEN: Final = 300
#: Most LAN addresses a node may register.
MAX_LAN_ADDRS: Final = 16
#: Most candidate endpoints a node may publish.
MAX_CANDIDATES: Final = 8
#: A node name: one lower-case DNS label.
NAME_PATTERN: Final = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
_MAX_URL_LEN: Final = 300
_MAX_TS_US: Final = 2**63 - 1
_DNS_LABEL: Final = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_THIS_NETWORK: Final = ipaddress.IPv4Network("0.0.0.0/8")
_BROADCAST: Final = ipaddress.IPv4Address("255.255.255.255")

#: How a node reaches its beacon: plain UDP, or a stream (TCP/WebSocket)
#: session when UDP is blocked.
Transport = Literal["udp", "stream"]
#: ``host``: an interface address of the node; ``srflx``: its public mapping
#: as a beacon observed it (server-reflexive).
CandidateKind = Literal["host", "srflx"]


def _split(text: str) -> tuple[str, int]:
    host, port = split_host_port(text)
    if not host:
        raise ValueError(f"missing host in address {text!r}")
    if not 1 <= port <= 0xFFFF:
        raise ValueError(f"port must be 1..65535 in address {text!r}")
    return host, port


def _parse_ip_port(text: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    host, port = _split(text)
    if "%" in host:
        raise ValueError(f"zoned IPv6 addresses are not reachable from peers: {text!r}")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError as exc:
        raise ValueError(f"host must be an IP literal in address {text!r}") from exc
    if (ip.version == 6) != text.startswith("["):
        raise ValueError(f"IPv6 hosts must be bracketed (and only they) in {text!r}")
    return ip, port


def address_problem(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address, *, allow_local: bool
) -> str | None:
    """Why peers must not be told to send to ``ip``, or ``None`` when they may.

    Refused always: unspecified (``0.0.0.0/8``, ``::``), the limited
    broadcast address ``255.255.255.255`` (a subnet's broadcast address
    cannot be told from a host address without its prefix length) and
    multicast. Refused unless ``allow_local``: loopback and link-local, which
    would aim every peer at a service on its own host or link. Private
    (RFC 1918, ULA), CGNAT and benchmarking (198.18.0.0/15) addresses are
    normal unicast addresses and accepted. IPv4-mapped IPv6 addresses are
    judged as the IPv4 address they carry.
    """
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_unspecified or (isinstance(ip, ipaddress.IPv4Address) and ip in _THIS_NETWORK):
        return "is an unspecified address (0.0.0.0/8 or ::) that no peer can send to"
    if ip == _BROADCAST:
        return "is the broadcast address: peers would send to every host on their own link"
    if ip.is_multicast:
        return "is a multicast address: peers would send to a group, not to this node"
    if not allow_local:
        if ip.is_loopback:
            return (
                "is a loopback address: every peer would send to its own host "
                "(accepted only in dev mode or with NATROUTE_REGISTRY_ALLOW_LOCAL_ENDPOINTS)"
            )
        if ip.is_link_local:
            return (
                "is a link-local address, not reachable beyond one link "
                "(accepted only in dev mode or with NATROUTE_REGISTRY_ALLOW_LOCAL_ENDPOINTS)"
            )
    return None


def check_ip_port(text: str) -> str:
    """Validate a node address: ``ip:port`` / ``[v6]:port`` a peer may send to.

    Loopback and link-local pass here (the app refuses them outside dev
    mode, see :func:`address_problem`).

    Returns:
        ``text`` unchanged.

    Raises:
        ValueError: host names, zones, port 0, no port, or an address that is
            unspecified, broadcast or multicast.
    """
    ip, _ = _parse_ip_port(text)
    problem = address_problem(ip, allow_local=True)
    if problem is not None:
        raise ValueError(f"{text} {problem}")
    return text


def check_name_or_ip_port(text: str) -> str:
    """Validate ``host:port`` where host is an IP literal or a DNS name (a beacon).

    Raises:
        ValueError: unparseable, empty host, bad DNS name, port outside 1..65535.
    """
    host, _ = _split(text)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if text.startswith("[") or not _is_dns_name(host):
            raise ValueError(f"host is neither an IP literal nor a DNS name in {text!r}") from None
        return text
    _parse_ip_port(text)
    return text


def _is_dns_name(host: str) -> bool:
    name = host.removesuffix(".")
    return len(name) <= 253 and all(_DNS_LABEL.match(label) for label in name.split("."))


def check_stream_url(text: str) -> str:
    """Validate a beacon's stream relay URL: ``ws://`` or ``wss://`` with a host.

    Returns:
        ``text`` unchanged.

    Raises:
        ValueError: another scheme, no or a bad host, a bad port, credentials,
            a fragment, white space or control characters.
    """
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text):
        raise ValueError("stream_url must not contain white space or control characters")
    parts = urlsplit(text)
    if parts.scheme not in ("ws", "wss"):
        raise ValueError(f"stream_url must be a ws:// or wss:// URL: {text!r}")
    if parts.username is not None or parts.password is not None or parts.fragment:
        raise ValueError("stream_url must not carry credentials or a fragment")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"bad port in stream_url {text!r}") from exc
    host = parts.hostname or ""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not host or not _is_dns_name(host) or parts.netloc.startswith("["):
            raise ValueError(f"stream_url has no valid host: {text!r}") from None
    if port == 0:
        raise ValueError(f"port must be 1..65535 in stream_url {text!r}")
    return text


def _check_key(text: str) -> str:
    b64decode_exact(text, KEY_LEN)
    return text


def _check_signature(text: str) -> str:
    b64decode_exact(text, SIGNATURE_LEN)
    return text


def _no_duplicate_addrs(candidates: list[CandidateEntry]) -> list[CandidateEntry]:
    seen: set[tuple[str, int]] = set()
    for candidate in candidates:
        ip, port = _parse_ip_port(candidate.addr)
        key = (str(ip), port)
        if key in seen:
            raise ValueError(f"candidate {candidate.addr} is listed twice")
        seen.add(key)
    return candidates


#: ``ip:port`` with an IP literal (a node's endpoint, LAN address or candidate).
IpPort = Annotated[str, Field(max_length=MAX_ADDR_LEN), AfterValidator(check_ip_port)]
#: ``host:port`` with an IP literal or DNS name (a beacon address).
NameOrIpPort = Annotated[str, Field(max_length=MAX_ADDR_LEN), AfterValidator(check_name_or_ip_port)]
#: A beacon's stream relay URL (``ws://`` / ``wss://``).
StreamUrl = Annotated[str, Field(max_length=_MAX_URL_LEN), AfterValidator(check_stream_url)]
#: A node name: a lower-case DNS label, 1..63 characters.
NodeName = Annotated[str, Field(min_length=1, max_length=63, pattern=NAME_PATTERN)]
#: A 32-byte public key in standard base64.
B64Key = Annotated[str, Field(max_length=64), AfterValidator(_check_key)]
#: A 64-byte Ed25519 signature in standard base64.
B64Signature = Annotated[str, Field(max_length=128), AfterValidator(_check_signature)]
_NodeId = Annotated[int, Field(ge=1, le=MAX_NODE_ID)]
_TimestampUs = Annotated[int, Field(ge=0, le=_MAX_TS_US)]

_STRICT: Final = ConfigDict(strict=True, extra="forbid")


class CandidateEntry(BaseModel):
    """One candidate endpoint of a node: where a peer may try to reach it directly."""

    model_config = _STRICT

    addr: IpPort
    kind: CandidateKind


#: At most :data:`MAX_CANDIDATES` candidates, each address once.
Candidates = Annotated[
    list[CandidateEntry], Field(max_length=MAX_CANDIDATES), AfterValidator(_no_duplicate_addrs)
]


class RegisterRequest(BaseModel):
    """``POST /v1/nodes``: a node announces itself (signed, action ``register``).

    A registration replaces everything stored for the node: a field left out
    takes its default (no candidates, ``udp``, no name, not relay-only).
    """

    model_config = _STRICT

    ed25519_public_key: B64Key
    x25519_public_key: B64Key | None = None
    endpoint: IpPort | None = None
    lan_addrs: list[IpPort] = Field(default_factory=list, max_length=MAX_LAN_ADDRS)
    candidates: Candidates = Field(default_factory=list)
    relay_only: bool = False
    transport: Transport = "udp"
    name: NodeName | None = None
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

    ``endpoint``, ``relay_only``, ``candidates`` and ``transport`` left out
    (or null) keep their stored value; a list replaces the candidates (``[]``
    clears them). The name is not changed by a heartbeat (re-register).
    """

    model_config = _STRICT

    endpoint: IpPort | None = None
    relay_only: bool | None = None
    candidates: Candidates | None = None
    transport: Transport | None = None
    timestamp_us: _TimestampUs
    signature: B64Signature


class HeartbeatResponse(BaseModel):
    """Answer to a heartbeat."""

    node_id: int
    relay_only: bool
    ttl: int


class NodeView(BaseModel):
    """``GET /v1/nodes/{id}`` and ``GET /v1/names/{name}``; ``None`` fields are left out.

    For a relay-only node ``endpoint`` is a beacon address (or absent when no
    beacon is known), ``lan_addrs`` is absent and ``relay_only`` is ``true``;
    for a normal node ``relay_only`` is absent. ``candidates`` are listed for
    every node, relay-only ones included (relay-only means "start on the
    relay"; peers may still probe the candidates). ``transport`` is always
    present, ``name`` only when the node has one.
    """

    node_id: int
    name: str | None = None
    endpoint: str | None = None
    lan_addrs: list[str] | None = None
    candidates: list[CandidateEntry] = Field(default_factory=list)
    relay_only: Literal[True] | None = None
    transport: Transport = "udp"
    ed25519_public_key: str
    x25519_public_key: str | None = None
    last_seen: float
    key_age_days: int


class NodeListResponse(BaseModel):
    """``GET /v1/nodes`` (operator token): live nodes, as resolve shows them."""

    nodes: list[NodeView]


class BeaconRegisterRequest(BaseModel):
    """``POST /v1/beacons`` (operator token): a beacon (re-)registers.

    ``stream_url`` is where nodes on UDP-blocked networks attach over a
    WebSocket; a registration without it clears a previous one.
    """

    model_config = _STRICT

    beacon_id: _NodeId
    addr: NameOrIpPort
    stream_url: StreamUrl | None = None


class BeaconRegisterResponse(BaseModel):
    """Answer to a beacon registration; re-register well within ``ttl`` seconds."""

    beacon_id: int
    addr: str
    stream_url: str | None = None
    ttl: int


class BeaconEntry(BaseModel):
    """One live beacon in ``GET /v1/beacons`` (``stream_url`` only when it has one)."""

    id: int
    addr: str
    stream_url: str | None = None


def beacon_entry(beacon_id: int, addr: str, stream_url: str | None) -> dict[str, Any]:
    """One ``GET /v1/beacons`` entry as plain JSON data (``stream_url`` only when set)."""
    entry: dict[str, Any] = {"id": beacon_id, "addr": addr}
    if stream_url is not None:
        entry["stream_url"] = stream_url
    return entry


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
