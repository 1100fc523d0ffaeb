"""Settings of ``natroute-beacon``: env (``NATROUTE_BEACON_*``) overridden by flags.

``build_settings(argv)`` is called by ``main()`` only; nothing here runs at
import time. :meth:`Settings.core_config` turns the settings into the core's
frozen :class:`~natroute.beacon.config.BeaconConfig`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from natroute._service.settings import check_host_port, check_http_url, check_log_level
from natroute.routing.selection import fnv1a32

from .config import (
    DEFAULT_GOSSIP_INTERVAL,
    DEFAULT_REGISTER_INTERVAL,
    DEFAULT_SWEEP_INTERVAL,
    BeaconConfig,
    RateLimit,
)
from .early import DEFAULT_LISTEN
from .streamlimits import StreamLimits

__all__ = ["Settings", "build_settings", "derive_beacon_id", "parse_args"]

_DISABLED = ("", "off", "none", "false", "0")
# Core and hub defaults, so each default is written once (config.py, streams.py).
_D = BeaconConfig(beacon_id=1)
_S = StreamLimits()


def derive_beacon_id(text: str) -> int:
    """A stable non-zero beacon ID from a string (FNV-1a 32 of its UTF-8 bytes).

    Used when no ``--beacon-id`` is set: the advertised address names the
    beacon, so the same deployment keeps the same ID across restarts.
    """
    return fnv1a32(text.encode()) or 1


class Settings(BaseSettings):
    """Every knob of the beacon service. Env names: ``NATROUTE_BEACON_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="NATROUTE_BEACON_", extra="ignore")

    listen: str = Field(default=DEFAULT_LISTEN, description="UDP listen address host:port")
    http: str = Field(
        default="0.0.0.0:8001", description="admin HTTP listen host:port, 'off' disables"
    )
    beacon_id: int = Field(default=0, ge=0, le=0xFFFFFFFF, description="0: derived from advertise")
    peers: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), description="peer beacons host:port"
    )
    registry_url: str | None = Field(default=None, description="registry base URL")
    registry_token: SecretStr | None = Field(
        default=None, description="bearer token for the registry"
    )
    advertise: str | None = Field(
        default=None, description="address registered; default: bound address"
    )
    strict: bool = True
    require_signature: bool = Field(
        default=_D.require_signature, description="strict: only signed discovers record a node"
    )
    node_ttl: float = Field(default=_D.node_ttl, gt=0)
    node_cap: int = Field(default=_D.node_cap, ge=1)
    node_quota_host: int = Field(default=_D.node_quota_host, ge=0)
    node_quota_net: int = Field(default=_D.node_quota_net, ge=0)
    sweep_interval: float = Field(default=DEFAULT_SWEEP_INTERVAL, gt=0)
    gossip_interval: float = Field(default=DEFAULT_GOSSIP_INTERVAL, gt=0)
    gossip_ttl: float = Field(default=_D.gossip_ttl, gt=0)
    early_gossip_spacing: float = Field(
        default=_D.early_gossip_spacing,
        ge=0,
        description="new nodes are gossiped at once, rounds this far apart per datagram (0: off)",
    )
    handoff_after: float = Field(default=_D.handoff_after, gt=0)
    register_interval: float = Field(default=DEFAULT_REGISTER_INTERVAL, gt=0)
    discover_rate: float = _D.discover_limit.rate
    discover_burst: float = _D.discover_limit.burst
    punch_rate: float = _D.punch_limit.rate
    punch_burst: float = _D.punch_limit.burst
    relay_rate: float = _D.relay_packet_limit.rate
    relay_burst: float = _D.relay_packet_limit.burst
    relay_byte_rate: float = _D.relay_byte_limit.rate
    relay_byte_burst: float = _D.relay_byte_limit.burst
    limiter_cap: int = Field(default=_D.limiter_cap, ge=1)
    auth_max_skew: float = Field(default=_D.auth_max_skew, ge=0)
    send_buffer_limit: int = Field(
        default=4 << 20, ge=0, description="drop sends past this backlog"
    )
    udp_batch: bool = Field(
        default=True, description="recvmmsg/sendmmsg on Linux (off: asyncio datagram transport)"
    )
    udp_gso: bool = Field(default=True, description="send runs of datagrams with UDP GSO")
    stream: bool = Field(default=True, description="serve the stream relay on the HTTP port")
    advertise_stream: str | None = Field(
        default=None,
        description="stream relay URL registered; default ws(s)://<advertised host>:<HTTP port>"
        "/v1/relay",
    )
    stream_max_sessions: int = Field(default=_S.max_sessions, ge=1)
    stream_hello_timeout: float = Field(default=_S.hello_timeout, gt=0)
    stream_idle_timeout: float = Field(default=_S.idle_timeout, gt=0)
    stream_ping_interval: float = Field(default=20.0, gt=0)
    stream_send_queue: int = Field(default=_S.send_queue, ge=1)
    stream_trust_first_key: bool = Field(
        default=_S.trust_first_key,
        description="accept a stream hello on its signature alone when no registry answers",
    )
    tls_cert: str | None = Field(default=None, description="PEM certificate: HTTPS/WSS")
    tls_key: str | None = Field(default=None, description="PEM private key of tls_cert")
    log_level: str = "info"

    @field_validator("peers", mode="before")
    @classmethod
    def _split_peers(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("peers")
    @classmethod
    def _check_peers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(check_host_port(peer) for peer in value)

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        return check_host_port(value)

    @field_validator("advertise")
    @classmethod
    def _check_advertise(cls, value: str | None) -> str | None:
        return None if value is None or value == "" else check_host_port(value)

    @field_validator("http")
    @classmethod
    def _check_http(cls, value: str) -> str:
        return "" if value.lower() in _DISABLED else check_host_port(value)

    @field_validator("registry_url")
    @classmethod
    def _check_registry(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return check_http_url(value) or None

    @field_validator("advertise_stream")
    @classmethod
    def _check_stream_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("ws://", "wss://")):
            raise ValueError(f"advertise_stream must be a ws:// or wss:// URL: {value!r}")
        return value

    @field_validator("tls_cert", "tls_key")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value or None

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        return self

    def stream_limits(self) -> StreamLimits:
        """The stream hub's limits."""
        return StreamLimits(
            max_sessions=self.stream_max_sessions,
            hello_timeout=self.stream_hello_timeout,
            idle_timeout=self.stream_idle_timeout,
            send_queue=self.stream_send_queue,
            trust_first_key=self.stream_trust_first_key,
        )

    @field_validator("log_level")
    @classmethod
    def _check_level(cls, value: str) -> str:
        return check_log_level(value)

    def core_config(self, beacon_id: int) -> BeaconConfig:
        """The core's frozen config, with the resolved beacon ID."""
        return BeaconConfig(
            beacon_id=beacon_id,
            strict=self.strict,
            require_signature=self.require_signature,
            node_ttl=self.node_ttl,
            node_cap=self.node_cap,
            node_quota_host=self.node_quota_host,
            node_quota_net=self.node_quota_net,
            gossip_ttl=self.gossip_ttl,
            early_gossip_spacing=self.early_gossip_spacing,
            handoff_after=self.handoff_after,
            gossip_cap=self.node_cap,
            auth_max_skew=self.auth_max_skew,
            discover_limit=RateLimit(self.discover_rate, self.discover_burst),
            punch_limit=RateLimit(self.punch_rate, self.punch_burst),
            relay_packet_limit=RateLimit(self.relay_rate, self.relay_burst),
            relay_byte_limit=RateLimit(self.relay_byte_rate, self.relay_byte_burst),
            limiter_cap=self.limiter_cap,
        )


# flag -> (field, type); every flag defaults to "not given" so env stays in force.
_FLAGS: tuple[tuple[str, str, type, str], ...] = (
    ("--listen", "listen", str, "UDP listen HOST:PORT (default 0.0.0.0:9001)"),
    ("--http", "http", str, "admin HTTP HOST:PORT, or 'off' (default 0.0.0.0:8001)"),
    ("--beacon-id", "beacon_id", int, "beacon ID 1..2^32-1 (default: derived from --advertise)"),
    ("--peers", "peers", str, "static peer beacons, comma-separated HOST:PORT"),
    ("--registry", "registry_url", str, "registry base URL, e.g. http://registry:8000"),
    ("--registry-token", "registry_token", str, "bearer token for POST /v1/beacons"),
    ("--advertise", "advertise", str, "HOST:PORT registered (default: the bound address)"),
    ("--node-ttl", "node_ttl", float, "seconds before an idle node expires (600)"),
    ("--node-cap", "node_cap", int, "most nodes held (500000)"),
    (
        "--node-quota-host",
        "node_quota_host",
        int,
        "most nodes per source IPv4 address or IPv6 /64 (256; 0: off)",
    ),
    (
        "--node-quota-net",
        "node_quota_net",
        int,
        "most nodes per IPv4 /24 or IPv6 /48 (2048; 0: off)",
    ),
    ("--sweep-interval", "sweep_interval", float, "seconds between expiry sweeps (60)"),
    ("--gossip-interval", "gossip_interval", float, "seconds between Sync rounds (10)"),
    ("--gossip-ttl", "gossip_ttl", float, "seconds before unrefreshed gossip expires (30)"),
    (
        "--early-gossip-spacing",
        "early_gossip_spacing",
        float,
        "new nodes are gossiped at once, rounds this many s apart per datagram (0.25; 0: off)",
    ),
    (
        "--handoff-after",
        "handoff_after",
        float,
        "seconds after which a silent local node yields to a peer beacon announcing it (60)",
    ),
    ("--register-interval", "register_interval", float, "seconds between registrations (30)"),
    ("--discover-rate", "discover_rate", float, "discovers/s per source IP (0: off)"),
    ("--discover-burst", "discover_burst", float, "discover burst per source IP"),
    ("--punch-rate", "punch_rate", float, "punch requests/s per source IP (0: off)"),
    ("--punch-burst", "punch_burst", float, "punch burst per source IP"),
    ("--relay-rate", "relay_rate", float, "relays/s per source IP:port (0: off)"),
    ("--relay-burst", "relay_burst", float, "relay burst per source"),
    ("--relay-byte-rate", "relay_byte_rate", float, "relay payload bytes/s per source (0: off)"),
    ("--relay-byte-burst", "relay_byte_burst", float, "relay byte burst per source"),
    ("--limiter-cap", "limiter_cap", int, "most sources tracked per rate limiter"),
    ("--auth-max-skew", "auth_max_skew", float, "accepted clock skew of signed discovers (120)"),
    (
        "--advertise-stream",
        "advertise_stream",
        str,
        "stream relay URL registered (default ws://<advertised host>:<HTTP port>/v1/relay)",
    ),
    ("--stream-max-sessions", "stream_max_sessions", int, "most stream sessions (1024)"),
    ("--stream-hello-timeout", "stream_hello_timeout", float, "seconds to answer the hello (5)"),
    ("--stream-idle-timeout", "stream_idle_timeout", float, "seconds a silent session lives (75)"),
    ("--stream-ping-interval", "stream_ping_interval", float, "WebSocket ping period (20)"),
    ("--stream-send-queue", "stream_send_queue", int, "messages queued per session (256)"),
    ("--tls-cert", "tls_cert", str, "PEM certificate: serve HTTPS and WSS"),
    ("--tls-key", "tls_key", str, "PEM private key of --tls-cert"),
    ("--log-level", "log_level", str, "debug, info, warning or error"),
)


def parse_args(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse flags into Settings field overrides (only the flags given).

    Raises:
        SystemExit: on ``--help`` or a usage error (argparse).
    """
    parser = argparse.ArgumentParser(
        prog="natroute-beacon",
        description="natroute beacon: endpoint discovery, hole-punch coordination and relay. "
        "Every flag can also be set as NATROUTE_BEACON_<NAME> in the environment.",
        argument_default=argparse.SUPPRESS,
    )
    for flag, dest, kind, text in _FLAGS:
        parser.add_argument(flag, dest=dest, type=kind, help=text)
    parser.add_argument(
        "--strict",
        dest="strict",
        action=argparse.BooleanOptionalAction,
        help="strict sender/ownership checks (default on; --no-strict for upstream behaviour)",
    )
    parser.add_argument(
        "--udp-batch",
        dest="udp_batch",
        action=argparse.BooleanOptionalAction,
        help="batched UDP system calls (recvmmsg/sendmmsg) where available (default on)",
    )
    parser.add_argument(
        "--udp-gso",
        dest="udp_gso",
        action=argparse.BooleanOptionalAction,
        help="send runs of datagrams to one destination with UDP GSO (default on)",
    )
    parser.add_argument(
        "--stream",
        dest="stream",
        action=argparse.BooleanOptionalAction,
        help="serve the stream relay (WebSocket) on the HTTP port (default on)",
    )
    parser.add_argument(
        "--stream-trust-first-key",
        dest="stream_trust_first_key",
        action=argparse.BooleanOptionalAction,
        help="accept a stream hello on its signature alone when no registry answers "
        "(dev; default off: fail closed)",
    )
    parser.add_argument(
        "--require-signature",
        dest="require_signature",
        action=argparse.BooleanOptionalAction,
        help="strict mode: only signed discovers record a new node (default off: "
        "upstream daemons do not sign)",
    )
    return vars(parser.parse_args(argv))


def build_settings(argv: Sequence[str] | None = None) -> Settings:
    """Settings from env, with command-line flags taking precedence.

    Raises:
        SystemExit: on ``--help`` or a usage error.
        pydantic.ValidationError: a value is invalid.
    """
    return Settings(**parse_args(argv))
