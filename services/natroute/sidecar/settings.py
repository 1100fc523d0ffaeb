"""Settings of ``natroute-sidecar``: env ``NATROUTE_SIDECAR_*``, overridden by flags.

Every field is also a flag (``--blackhole-threshold 2``); pydantic-settings
parses both. :func:`build_settings` is called by ``main()`` only. The same
env names are used by compose and the Helm chart.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Sequence
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, CliApp, SettingsConfigDict

from natroute._service.settings import (
    check_host_port,
    check_http_url,
    check_log_level,
    check_secret_token,
)
from natroute.routing.addr import split_host_port
from natroute.routing.config import ManagerConfig
from natroute.routing.constants import (
    BEACON_REFRESH_INTERVAL,
    BEACON_REFRESH_JITTER,
    BLACKHOLE_MISSES_REQUIRED,
    DIRECT_BLACKHOLE_THRESHOLD,
    DIRECT_CLEARS_REQUIRED,
    MAX_RELAY_PEERS,
    SEND_ERR_THRESHOLD,
)
from natroute.routing.selection import parse_beacon_list

from .model import NodeConfig

__all__ = ["Settings", "build_settings"]

_N = NodeConfig()


class Settings(BaseSettings):
    """Every knob of the sidecar. Env: ``NATROUTE_SIDECAR_<FIELD>``; flag: ``--<field>``."""

    model_config = SettingsConfigDict(
        env_prefix="NATROUTE_SIDECAR_",
        extra="ignore",
        cli_kebab_case=True,
        cli_implicit_flags=True,
        cli_prog_name="natroute-sidecar",
    )

    listen: str = Field("0.0.0.0:4000", description="UDP socket for peers and beacons")
    app_listen: str = Field("127.0.0.1:4100", description="local data plane UDP address")
    app_deliver: str = Field(
        "", description="where received payloads go; default: the app's last source address"
    )
    admin_listen: str = Field("127.0.0.1:8080", description="admin HTTP API; 'off' disables")
    admin_token: SecretStr = Field(SecretStr(""), description="bearer token for mutations")
    identity: str = Field(
        "/var/lib/natroute/identity.json", description="identity key file (beacon cache beside)"
    )
    name: str = Field(
        "",
        description="node name for peers and operators (default: the host name; 'none': no name)",
    )
    registry_url: str = Field("", description="registry base URL, e.g. http://registry:9000")
    beacons: str = Field("", description="bootstrap beacons host:port,...")
    advertise: str = Field("", description="public endpoint to register instead of discovery")
    lan_addrs: str = Field(
        "", description="host candidates host:port,... to publish instead of the interfaces'"
    )
    host_candidates: bool = Field(
        True, description="publish this host's interface addresses as candidates"
    )
    relay_only: bool | None = Field(None, description="force relay_only (default: from NAT type)")
    nat_detect: bool = Field(True, description="classify the NAT with two beacons")
    stream: bool = Field(
        True, description="relay over a WebSocket to the beacon when UDP is blocked"
    )
    beacon_stream: str = Field(
        "", description="stream relay URL ws(s)://host:port/v1/relay (default: the registry's)"
    )
    stream_after: float = Field(
        30.0, gt=0, description="seconds without any UDP answer before using the stream"
    )
    udp_retry_interval: float = Field(
        5.0, gt=0, description="first wait, seconds, before trying UDP again while on the stream"
    )
    udp_retry_max_interval: float = Field(
        60.0, gt=0, description="longest wait, seconds, between UDP tries while on the stream"
    )
    stream_ca_file: str = Field("", description="CA bundle for wss:// (default: the system's)")
    beacon_rtt_probe: bool = Field(False, description="RTT override of the hash pick")
    refresh_interval: float = Field(BEACON_REFRESH_INTERVAL, gt=0)
    refresh_jitter: float = Field(BEACON_REFRESH_JITTER, ge=0)
    beacon_keepalive_interval: float = Field(10.0, gt=0, description="register_with_beacon")
    beacon_dead_after: float = Field(30.0, gt=0, description="no keepalive reply: fail over")
    beacon_quarantine: float = Field(60.0, gt=0, description="re-probe a dead beacon after")
    heartbeat_interval: float = Field(30.0, gt=0, description="registry heartbeat")
    discover_timeout: float = Field(2.0, gt=0)
    tick_interval: float = Field(0.5, gt=0, description="peer upkeep timer")
    udp_batch: bool = Field(
        True, description="recvmmsg/sendmmsg on the sockets where the platform has them"
    )
    udp_buffer: int = Field(
        4 << 20,
        ge=0,
        description="receive and send buffer bytes asked for on both sockets (0: the system's)",
    )
    blackhole_threshold: float = Field(DIRECT_BLACKHOLE_THRESHOLD, gt=0)
    blackhole_misses: int = Field(BLACKHOLE_MISSES_REQUIRED, ge=1)
    direct_clears: int = Field(DIRECT_CLEARS_REQUIRED, ge=1)
    send_err_threshold: int = Field(SEND_ERR_THRESHOLD, ge=1)
    max_relay_peers: int = Field(MAX_RELAY_PEERS, ge=1)
    max_peers: int = Field(_N.max_peers, ge=1)
    check_window: float = Field(
        _N.check_window, gt=0, description="seconds a round of connectivity checks lasts"
    )
    check_interval: float = Field(
        _N.check_interval, gt=0, description="seconds between probes within a check round"
    )
    reevaluate_interval: float = Field(
        _N.reevaluate_interval, gt=0, description="seconds between path re-checks while direct"
    )
    one_way_rounds: int = Field(
        _N.one_way_rounds, ge=1, description="unanswered keepalive probes that make a path one-way"
    )
    offline_after: float = Field(
        _N.offline_after, gt=0, description="seconds of silence before a peer shows as offline"
    )
    probe_initial_interval: float = Field(_N.probe_initial_interval, gt=0)
    probe_max_interval: float = Field(_N.probe_max_interval, gt=0)
    peer_keepalive_interval: float = Field(_N.keepalive_interval, gt=0)
    peer_refresh_interval: float = Field(_N.peer_refresh_interval, gt=0)
    peer_idle_timeout: float = Field(_N.peer_idle_timeout, gt=0)
    log_level: str = Field("info", description="debug, info, warning or error")
    log_format: Literal["json", "text"] = Field(
        "json", description="json (one object per line) or text (readable lines)"
    )

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        text = value.strip().lower()
        if (
            text
            and text != "none"
            and not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", text)
        ):
            raise ValueError(f"a node name is a DNS label (a-z, 0-9, '-', at most 63): {value!r}")
        return text

    @field_validator("listen", "app_listen")
    @classmethod
    def _checkcheck_host_port(cls, value: str) -> str:
        return check_host_port(value)

    @field_validator("admin_listen")
    @classmethod
    def _check_admin(cls, value: str) -> str:
        return "" if value.lower() in ("", "off", "none") else check_host_port(value)

    @field_validator("app_deliver", "advertise")
    @classmethod
    def _check_optional(cls, value: str) -> str:
        return check_host_port(value) if value else ""

    @field_validator("beacons", "lan_addrs")
    @classmethod
    def _check_list(cls, value: str) -> str:
        for entry in parse_beacon_list(value):
            check_host_port(entry)
        return value

    @field_validator("admin_token")
    @classmethod
    def _check_admin_token(cls, value: SecretStr) -> SecretStr:
        # Empty stays allowed (mutations are then refused with 403); a weak one is not.
        env, flag = "NATROUTE_SIDECAR_ADMIN_TOKEN", "--admin-token"
        token = value.get_secret_value()
        return SecretStr(check_secret_token(token, env=env, flag=flag, allow_empty=True))

    @field_validator("beacon_stream")
    @classmethod
    def _check_stream_url(cls, value: str) -> str:
        if value and not value.startswith(("ws://", "wss://")):
            raise ValueError(f"a stream URL is ws:// or wss://: {value!r}")
        return value

    @field_validator("registry_url")
    @classmethod
    def _check_registry(cls, value: str) -> str:
        return check_http_url(value)

    @field_validator("log_level")
    @classmethod
    def _check_level(cls, value: str) -> str:
        return check_log_level(value)

    def manager_config(self) -> ManagerConfig:
        """The routing Manager's thresholds."""
        return ManagerConfig(
            blackhole_threshold=self.blackhole_threshold,
            blackhole_misses_required=self.blackhole_misses,
            direct_clears_required=self.direct_clears,
            send_err_threshold=self.send_err_threshold,
            max_relay_peers=self.max_relay_peers,
        )

    def node_name(self) -> str | None:
        """The name to register: the setting, else the host name made a DNS label."""
        raw = self.name.strip().lower()
        if raw == "none":
            return None
        label = re.sub(r"[^a-z0-9-]+", "-", raw or socket.gethostname().lower()).strip("-")[:63]
        return label.strip("-") or None

    def loopback_world(self) -> bool:
        """The peer socket is bound to loopback: peers live on this host, and
        loopback candidates are allowed."""
        host, _ = split_host_port(self.listen)
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    def node_config(self) -> NodeConfig:
        """The peer logic's timers and caps."""
        return NodeConfig(
            max_peers=self.max_peers,
            check_window=self.check_window,
            check_interval=self.check_interval,
            reevaluate_interval=self.reevaluate_interval,
            one_way_rounds=self.one_way_rounds,
            offline_after=self.offline_after,
            allow_loopback=self.loopback_world(),
            force_relay=bool(self.relay_only),
            probe_initial_interval=self.probe_initial_interval,
            probe_max_interval=self.probe_max_interval,
            keepalive_interval=self.peer_keepalive_interval,
            peer_refresh_interval=self.peer_refresh_interval,
            peer_idle_timeout=self.peer_idle_timeout,
        )


def build_settings(argv: Sequence[str]) -> Settings:
    """Settings from the environment, overridden by command-line flags."""
    return CliApp.run(Settings, cli_args=list(argv))
