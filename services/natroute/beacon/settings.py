"""Settings of ``natroute-beacon``: flags, env ``NATROUTE_BEACON_*``, a config file.

Built by ``main()`` through the shared layer (:mod:`natroute._service.cli`);
nothing here runs at import time. :meth:`Settings.core_config` turns the
settings into the core's frozen :class:`~natroute.beacon.config.BeaconConfig`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from natroute._service.cli import ServiceSettings
from natroute._service.settings import (
    Count,
    HostPort,
    Metavar,
    Seconds,
    check_host_port,
    check_http_url,
)
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

__all__ = ["DESCRIPTION", "Settings", "derive_beacon_id"]

#: The first paragraph of ``natroute-beacon --help``.
DESCRIPTION = (
    "natroute beacon: endpoint discovery, hole-punch coordination and relay for natroute "
    "nodes, over UDP and, for nodes without UDP, over a WebSocket on the HTTP port."
)

_DISABLED = ("", "off", "none", "false", "0")
# Core and hub defaults, so each default is written once (config.py, streams.py).
_D = BeaconConfig(beacon_id=1)
_S = StreamLimits()
_Rate = Annotated[float, Metavar("PER_SECOND")]
_Burst = Annotated[float, Metavar("N")]


def derive_beacon_id(text: str) -> int:
    """A stable non-zero beacon ID from a string (FNV-1a 32 of its UTF-8 bytes).

    Used when no ``--beacon-id`` is set: the advertised address names the
    beacon, so the same deployment keeps the same ID across restarts.
    """
    return fnv1a32(text.encode()) or 1


class Settings(ServiceSettings):
    """Every knob of the beacon (env ``NATROUTE_BEACON_<FIELD>``, flag ``--<field>``)."""

    model_config = SettingsConfigDict(env_prefix="NATROUTE_BEACON_")
    renamed: ClassVar[Mapping[str, str]] = {"http": "http_listen", "registry": "registry_url"}

    listen: HostPort = Field(DEFAULT_LISTEN, description="UDP socket for nodes and peer beacons")
    http_listen: Annotated[str, Metavar("HOST:PORT")] = Field(
        "0.0.0.0:8001",
        description="HTTP server: the stream relay (WebSocket), read-only status and metrics; "
        "'off' disables it",
    )
    beacon_id: Annotated[int, Metavar("ID")] = Field(
        0, ge=0, le=0xFFFFFFFF, description="beacon ID, 1 to 2^32-1 (default: from --advertise)"
    )
    peers: Annotated[tuple[str, ...], NoDecode, Metavar("HOST:PORT,...")] = Field(
        (), description="static peer beacons to gossip with"
    )
    registry_url: Annotated[str | None, Metavar("URL")] = Field(
        None, description="registry base URL, e.g. http://registry:9000"
    )
    registry_token: SecretStr | None = Field(
        None, description="bearer token for registering with the registry"
    )
    advertise: Annotated[str | None, Metavar("HOST:PORT")] = Field(
        None, description="UDP address registered (default: the bound address)"
    )
    strict: bool = Field(
        True, description="strict sender and ownership checks (off: upstream behaviour)"
    )
    require_signature: bool = Field(
        _D.require_signature,
        description="only signed discovers record a new node (upstream daemons do not sign)",
    )
    node_ttl: Seconds = Field(_D.node_ttl, gt=0, description="seconds before an idle node expires")
    node_cap: Count = Field(_D.node_cap, ge=1, description="most nodes held")
    node_quota_host: Count = Field(
        _D.node_quota_host,
        ge=0,
        description="most nodes per source IPv4 address or IPv6 /64 (0: no limit)",
    )
    node_quota_net: Count = Field(
        _D.node_quota_net, ge=0, description="most nodes per IPv4 /24 or IPv6 /48 (0: no limit)"
    )
    sweep_interval: Seconds = Field(
        DEFAULT_SWEEP_INTERVAL, gt=0, description="seconds between expiry sweeps"
    )
    gossip_interval: Seconds = Field(
        DEFAULT_GOSSIP_INTERVAL, gt=0, description="seconds between gossip rounds to peer beacons"
    )
    gossip_ttl: Seconds = Field(
        _D.gossip_ttl, gt=0, description="seconds before unrefreshed gossip expires"
    )
    early_gossip_spacing: Seconds = Field(
        _D.early_gossip_spacing,
        ge=0,
        description="new nodes are gossiped at once, in rounds this many seconds apart per "
        "datagram (0: off)",
    )
    handoff_after: Seconds = Field(
        _D.handoff_after,
        gt=0,
        description="seconds after which a silent local node yields to a peer beacon announcing it",
    )
    register_interval: Seconds = Field(
        DEFAULT_REGISTER_INTERVAL, gt=0, description="seconds between registrations"
    )
    discover_rate: _Rate = Field(
        _D.discover_limit.rate, description="discovers per second per source IP (0: no limit)"
    )
    discover_burst: _Burst = Field(
        _D.discover_limit.burst, description="discover burst per source IP"
    )
    punch_rate: _Rate = Field(
        _D.punch_limit.rate, description="punch requests per second per source IP (0: no limit)"
    )
    punch_burst: _Burst = Field(_D.punch_limit.burst, description="punch burst per source IP")
    relay_rate: _Rate = Field(
        _D.relay_packet_limit.rate,
        description="relayed datagrams per second per source IP:port (0: no limit)",
    )
    relay_burst: _Burst = Field(
        _D.relay_packet_limit.burst, description="relay burst per source, in datagrams"
    )
    relay_byte_rate: _Rate = Field(
        _D.relay_byte_limit.rate,
        description="relayed payload bytes per second per source (0: no limit)",
    )
    relay_byte_burst: _Burst = Field(
        _D.relay_byte_limit.burst, description="relay burst per source, in bytes"
    )
    limiter_cap: Count = Field(
        _D.limiter_cap, ge=1, description="most sources tracked by each rate limiter"
    )
    auth_max_skew: Seconds = Field(
        _D.auth_max_skew, ge=0, description="clock skew, seconds, accepted in signed discovers"
    )
    send_buffer_limit: Annotated[int, Metavar("BYTES")] = Field(
        4 << 20, ge=0, description="bytes of unsent datagrams past which sends are dropped"
    )
    udp_batch: bool = Field(
        True, description="recvmmsg/sendmmsg on Linux (off: the asyncio datagram transport)"
    )
    udp_gso: bool = Field(True, description="send runs of datagrams with UDP GSO")
    stream: bool = Field(True, description="serve the stream relay on the HTTP port")
    advertise_stream: Annotated[str | None, Metavar("URL")] = Field(
        None,
        description="stream relay URL registered "
        "(default: ws(s)://<advertised host>:<HTTP port>/v1/relay)",
    )
    stream_max_sessions: Count = Field(
        _S.max_sessions, ge=1, description="most stream sessions at once"
    )
    stream_hello_timeout: Seconds = Field(
        _S.hello_timeout, gt=0, description="seconds a stream client has to answer the hello"
    )
    stream_idle_timeout: Seconds = Field(
        _S.idle_timeout, gt=0, description="seconds a silent stream session lives"
    )
    stream_ping_interval: Seconds = Field(20.0, gt=0, description="seconds between WebSocket pings")
    stream_send_queue: Count = Field(
        _S.send_queue, ge=1, description="messages queued per stream session before drops"
    )
    stream_trust_first_key: bool = Field(
        _S.trust_first_key,
        description="accept a stream hello on its signature alone when no registry answers "
        "(for labs; off: fail closed)",
    )
    tls_cert: Annotated[str | None, Metavar("PATH")] = Field(
        None, description="PEM certificate: serve HTTPS and WSS"
    )
    tls_key: Annotated[str | None, Metavar("PATH")] = Field(
        None, description="PEM private key of --tls-cert"
    )

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

    @field_validator("advertise")
    @classmethod
    def _check_advertise(cls, value: str | None) -> str | None:
        return None if value is None or value == "" else check_host_port(value)

    @field_validator("http_listen")
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
            raise ValueError(
                "--tls-cert and --tls-key (NATROUTE_BEACON_TLS_CERT, NATROUTE_BEACON_TLS_KEY) "
                "go together: set both or neither"
            )
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
