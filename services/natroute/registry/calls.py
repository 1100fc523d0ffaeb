"""Request builders and response parsers shared by the sync and async clients.

Every registry call is described once by a :class:`Call` (method, path, JSON
body, whether it needs the operator token, and the parser of a 2xx body),
built by :class:`Calls`; :meth:`Calls.finish` turns any answer into a result
or a :class:`RegistryClientError`. Also home of the clients' result types.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Generic, NamedTuple, TypeVar

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ValidationError

from natroute.routing.errors import RegistryError, UsageError

from .models import (
    NAME_PATTERN,
    BeaconListResponse,
    BeaconRegisterResponse,
    HeartbeatResponse,
    NodeView,
    RegisterResponse,
    RelayOnlyResponse,
    beacon_entry,
)
from .signing import (
    ACTION_HEARTBEAT,
    ACTION_REGISTER,
    KEY_LEN,
    b64decode_exact,
    b64encode,
    public_key_bytes,
    sign,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "Beacon",
    "BeaconRegistration",
    "Call",
    "Calls",
    "Candidate",
    "HeartbeatResult",
    "Registration",
    "RegistryClientError",
    "RegistryNotFoundError",
    "RelayOnlyState",
    "Resolved",
    "transport_error",
]

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
DEFAULT_TIMEOUT: Final = 5.0
_NAME: Final = re.compile(NAME_PATTERN)


class RegistryClientError(RegistryError):
    """A registry call failed.

    Attributes:
        status: HTTP status, or ``None`` when no answer arrived (transport error).
        code: the server's error code (e.g. ``not_found``, ``bad_signature``,
            ``rate_limited``) or a client-side one: ``transport``,
            ``bad_response``, ``unsupported_message``.
        message: human-readable detail.
    """

    def __init__(self, status: int | None, code: str, message: str) -> None:
        super().__init__(f"registry: {code}: {message}" + (f" (HTTP {status})" if status else ""))
        self.status = status
        self.code = code
        self.message = message

    @property
    def not_found(self) -> bool:
        """True for a 404 (unknown or expired node)."""
        return self.status == 404


class RegistryNotFoundError(RegistryClientError):
    """404: the node is unknown, deleted or expired."""


@dataclass(frozen=True, slots=True)
class Registration:
    """A successful registration: the stable ID and how to stay alive."""

    node_id: int
    relay_only: bool
    ttl: int
    heartbeat_interval: int


@dataclass(frozen=True, slots=True)
class HeartbeatResult:
    """A successful heartbeat."""

    node_id: int
    relay_only: bool
    ttl: int


class Candidate(NamedTuple):
    """A candidate endpoint: ``addr`` (``ip:port``) and ``kind`` (``host`` or ``srflx``).

    A named tuple, so ``("203.0.113.7:4000", "srflx")`` compares equal to it.
    """

    addr: str
    kind: str


@dataclass(frozen=True, slots=True)
class Resolved:
    """A resolved peer. For relay-only peers ``endpoint`` is a beacon
    address (``None`` if the registry knows none) and ``lan_addrs`` is empty;
    ``candidates`` are the node's own in every case. ``transport`` is ``udp``
    or ``stream``; ``name`` is ``None`` when the node registered none."""

    node_id: int
    endpoint: str | None
    lan_addrs: tuple[str, ...]
    relay_only: bool
    ed25519_public_key: bytes
    x25519_public_key: bytes | None
    last_seen: float
    key_age_days: int
    candidates: tuple[Candidate, ...] = ()
    transport: str = "udp"
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Beacon:
    """A live beacon; ``stream_url`` (``ws://``/``wss://``) when it offers a stream relay."""

    id: int
    addr: str
    stream_url: str | None = None


@dataclass(frozen=True, slots=True)
class BeaconRegistration:
    """A successful beacon registration; re-register well within ``ttl``."""

    beacon_id: int
    addr: str
    ttl: int
    stream_url: str | None = None


@dataclass(frozen=True, slots=True)
class RelayOnlyState:
    """A node's effective ``relay_only`` and the operator's force (``None``: none)."""

    node_id: int
    relay_only: bool
    forced: bool | None


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[Any], T]
    body: dict[str, Any] | None = None
    operator: bool = False


def _model(cls: type[M], data: Any) -> M:
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise RegistryClientError(None, "bad_response", f"unexpected response: {exc}") from exc


def _parse_resolved(data: Any) -> Resolved:
    view = _model(NodeView, data)
    try:
        ed = b64decode_exact(view.ed25519_public_key, KEY_LEN)
        x = (
            None
            if view.x25519_public_key is None
            else b64decode_exact(view.x25519_public_key, KEY_LEN)
        )
    except ValueError as exc:
        raise RegistryClientError(None, "bad_response", f"bad key in response: {exc}") from exc
    return Resolved(
        node_id=view.node_id,
        endpoint=view.endpoint,
        lan_addrs=tuple(view.lan_addrs or ()),
        relay_only=bool(view.relay_only),
        ed25519_public_key=ed,
        x25519_public_key=x,
        last_seen=view.last_seen,
        key_age_days=view.key_age_days,
        candidates=tuple(Candidate(c.addr, c.kind) for c in view.candidates),
        transport=view.transport,
        name=view.name,
    )


def _parse_beacons(data: Any) -> list[Beacon]:
    return [Beacon(b.id, b.addr, b.stream_url) for b in _model(BeaconListResponse, data).beacons]


def _beacon_list_message(beacons: list[Beacon]) -> dict[str, Any]:
    entries = [beacon_entry(b.id, b.addr, b.stream_url) for b in beacons]
    return {"type": "beacon_list_ok", "beacons": entries}


def _candidate_fields(candidates: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    out = []
    for candidate in candidates:
        addr, kind = candidate
        out.append({"addr": addr, "kind": kind})
    return out


def _ignore(data: Any) -> None:
    return None


class Calls:
    """Builds every request and knows how to read every answer (shared logic)."""

    def __init__(self, token: str | None, clock: Callable[[], float]) -> None:
        self.token = token
        self._clock = clock
        self._last_ts_us = 0
        self._lock = threading.Lock()

    def _timestamp_us(self) -> int:
        # Strictly increasing per client: the registry refuses a timestamp
        # that is not newer than the key's last accepted one (replay guard).
        with self._lock:
            ts = max(int(self._clock() * 1e6), self._last_ts_us + 1)
            self._last_ts_us = ts
            return ts

    def register(
        self,
        key: Ed25519PrivateKey,
        x25519_public_key: bytes | None,
        endpoint: str | None,
        lan_addrs: Sequence[str],
        relay_only: bool,
        candidates: Sequence[tuple[str, str]] = (),
        transport: str = "udp",
        name: str | None = None,
    ) -> Call[Registration]:
        if x25519_public_key is not None and len(x25519_public_key) != KEY_LEN:
            raise UsageError(f"x25519_public_key must be {KEY_LEN} bytes")
        fields: dict[str, Any] = {
            "ed25519_public_key": b64encode(public_key_bytes(key)),
            "x25519_public_key": None
            if x25519_public_key is None
            else b64encode(x25519_public_key),
            "endpoint": endpoint,
            "lan_addrs": list(lan_addrs),
            "relay_only": relay_only,
            "timestamp_us": self._timestamp_us(),
        }
        # The newer fields are sent only when they say something, so a client
        # that does not use them still talks to an older registry.
        if candidates:
            fields["candidates"] = _candidate_fields(candidates)
        if transport != "udp":
            fields["transport"] = transport
        if name is not None:
            fields["name"] = name
        body = fields | {"signature": sign(key, ACTION_REGISTER, fields)}

        def parse(data: Any) -> Registration:
            r = _model(RegisterResponse, data)
            return Registration(r.node_id, r.relay_only, r.ttl, r.heartbeat_interval)

        return Call("POST", "/v1/nodes", parse, body)

    def heartbeat(
        self,
        key: Ed25519PrivateKey,
        node_id: int,
        endpoint: str | None,
        relay_only: bool | None,
        candidates: Sequence[tuple[str, str]] | None = None,
        transport: str | None = None,
    ) -> Call[HeartbeatResult]:
        fields: dict[str, Any] = {
            "endpoint": endpoint,
            "relay_only": relay_only,
            "timestamp_us": self._timestamp_us(),
        }
        if candidates is not None:
            fields["candidates"] = _candidate_fields(candidates)
        if transport is not None:
            fields["transport"] = transport
        signature = sign(key, ACTION_HEARTBEAT, fields | {"node_id": node_id})

        def parse(data: Any) -> HeartbeatResult:
            r = _model(HeartbeatResponse, data)
            return HeartbeatResult(r.node_id, r.relay_only, r.ttl)

        path = f"/v1/nodes/{_node_id(node_id)}/heartbeat"
        return Call("POST", path, parse, fields | {"signature": signature})

    def resolve(self, node_id: int) -> Call[Resolved]:
        return Call("GET", f"/v1/nodes/{_node_id(node_id)}", _parse_resolved)

    def resolve_name(self, name: str) -> Call[Resolved]:
        if not isinstance(name, str) or _NAME.fullmatch(name) is None:
            raise UsageError(f"not a node name (a lower-case DNS label): {name!r}")
        return Call("GET", f"/v1/names/{name}", _parse_resolved)

    def nodes(self, limit: int) -> Call[list[Resolved]]:
        def parse(data: Any) -> list[Resolved]:
            nodes = data.get("nodes") if isinstance(data, dict) else None
            if not isinstance(nodes, list):
                raise RegistryClientError(None, "bad_response", "expected {'nodes': [...]}")
            return [_parse_resolved(n) for n in nodes]

        return Call("GET", f"/v1/nodes?limit={int(limit)}", parse, operator=True)

    def beacons(self) -> Call[list[Beacon]]:
        return Call("GET", "/v1/beacons", _parse_beacons)

    def beacon_list_message(self, msg: Any) -> Call[dict[str, Any]]:
        """The seed's untyped ``BeaconLister.send`` (docs/protocol.md, "Beacon lists")."""
        kind = msg.get("type") if isinstance(msg, dict) else None
        if kind != "beacon_list":
            raise RegistryClientError(
                None, "unsupported_message", f"unsupported message type {kind!r}"
            )
        return Call("GET", "/v1/beacons", lambda d: _beacon_list_message(_parse_beacons(d)))

    def register_beacon(
        self, beacon_id: int, addr: str, stream_url: str | None = None
    ) -> Call[BeaconRegistration]:
        def parse(data: Any) -> BeaconRegistration:
            r = _model(BeaconRegisterResponse, data)
            return BeaconRegistration(r.beacon_id, r.addr, r.ttl, r.stream_url)

        body: dict[str, Any] = {"beacon_id": beacon_id, "addr": addr}
        if stream_url is not None:
            body["stream_url"] = stream_url
        return Call("POST", "/v1/beacons", parse, body, operator=True)

    def set_relay_only(self, node_id: int, force: bool | None) -> Call[RelayOnlyState]:
        def parse(data: Any) -> RelayOnlyState:
            r = _model(RelayOnlyResponse, data)
            return RelayOnlyState(r.node_id, r.relay_only, r.forced)

        path = f"/v1/nodes/{_node_id(node_id)}/relay_only"
        return Call("PUT", path, parse, {"force": force}, operator=True)

    def delete_node(self, node_id: int) -> Call[None]:
        return Call("DELETE", f"/v1/nodes/{_node_id(node_id)}", _ignore, operator=True)

    def request_args(self, call: Call[Any], base_url: str) -> dict[str, Any]:
        """Keyword arguments for ``httpx.(Async)Client.request`` (``base_url``: no trailing /)."""
        headers = {"Accept": "application/json"}
        if call.operator:
            if not self.token:
                raise UsageError("this registry call needs the operator token (token=...)")
            headers["Authorization"] = f"Bearer {self.token}"
        url = base_url + call.path
        args: dict[str, Any] = {"method": call.method, "url": url, "headers": headers}
        if call.body is not None:
            args["json"] = call.body
        return args

    @staticmethod
    def finish(call: Call[T], response: httpx.Response) -> T:
        """Parse a 2xx answer with the call's parser; raise for anything else."""
        if response.status_code == 204:
            return call.parse(None)
        try:
            data = response.json()
        except ValueError:
            data = None
        if 200 <= response.status_code < 300:
            if data is None:
                raise RegistryClientError(
                    response.status_code, "bad_response", "response is not JSON"
                )
            return call.parse(data)
        code, message = f"http_{response.status_code}", response.text[:200]
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, dict):
            code = str(error.get("code", code))
            message = str(error.get("message", message))
        cls = RegistryNotFoundError if response.status_code == 404 else RegistryClientError
        raise cls(response.status_code, code, message)


def _node_id(node_id: int) -> int:
    if type(node_id) is not int or not 1 <= node_id <= 0xFFFFFFFF:
        raise UsageError(f"node ID out of range: {node_id!r}")
    return node_id


def transport_error(exc: httpx.HTTPError) -> RegistryClientError:
    return RegistryClientError(None, "transport", f"{type(exc).__name__}: {exc}")
