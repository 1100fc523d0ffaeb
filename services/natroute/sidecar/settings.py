"""Settings of ``natroute-sidecar``: flags, env ``NATROUTE_SIDECAR_*``, a config file.

Built by ``main()`` through the shared layer (:mod:`natroute._service.cli`):
every field is a flag (``--blackhole-threshold 2``), an environment variable
(``NATROUTE_SIDECAR_BLACKHOLE_THRESHOLD``) and a ``--config`` file key. The
same env names are used by compose and the Helm chart.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Mapping
from typing import Annotated, ClassVar

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from natroute._service.cli import ServiceSettings
from natroute._service.settings import (
    Count,
    HostPort,
    HostPortList,
    HttpUrl,
    Metavar,
    Seconds,
    check_host_port,
    check_secret_token,
)
from natroute.registry.models import NAME_PATTERN
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

from .model import NodeConfig, PredictConfig

__all__ = ["DESCRIPTION", "Settings"]

#: The first paragraph of ``natroute-sidecar --help``.
DESCRIPTION = (
    "natroute sidecar: one node of the overlay. It registers with the registry, keeps a "
    "beacon, punches direct paths to peers and relays through the beacon when it cannot; "
    "the application sends and receives on the local data plane."
)

_N = NodeConfig()
_P = PredictConfig()
_OFF = ("", "off", "none")


class Settings(ServiceSettings):
    """Every knob of the sidecar (env ``NATROUTE_SIDECAR_<FIELD>``, flag ``--<field>``)."""

    model_config = SettingsConfigDict(env_prefix="NATROUTE_SIDECAR_")
    renamed: ClassVar[Mapping[str, str]] = {"admin_listen": "http_listen"}

    listen: HostPort = Field("0.0.0.0:4000", description="UDP socket for peers and beacons")
    app_listen: HostPort = Field(
        "127.0.0.1:4100",
        description="UDP socket of the local data plane, where the application sends",
    )
    app_deliver: Annotated[str, Metavar("HOST:PORT")] = Field(
        "", description="where received payloads go (default: the application's last address)"
    )
    http_listen: Annotated[str, Metavar("HOST:PORT")] = Field(
        "127.0.0.1:8080", description="admin API and status page (HTTP); 'off' disables it"
    )
    admin_token: SecretStr = Field(
        SecretStr(""), description="bearer token the admin API wants for changes (none: refused)"
    )
    identity: Annotated[str, Metavar("PATH")] = Field(
        "/var/lib/natroute/identity.json",
        description="identity key file, created when missing; the beacon cache is kept beside it",
    )
    name: Annotated[str, Metavar("NAME")] = Field(
        "",
        description="node name for peers and operators (default: the host name; 'none': no name)",
    )
    registry_url: HttpUrl = Field("", description="registry base URL, e.g. http://registry:9000")
    beacons: HostPortList = Field("", description="bootstrap beacons")
    advertise: Annotated[str, Metavar("HOST:PORT")] = Field(
        "", description="public endpoint to register instead of the discovered one"
    )
    lan_addrs: HostPortList = Field(
        "", description="host candidates to publish instead of the interfaces' addresses"
    )
    host_candidates: bool = Field(
        True, description="publish this host's interface addresses as candidates"
    )
    relay_only: bool | None = Field(
        None, description="always relay, never punch (default: from the NAT type)"
    )
    nat_detect: bool = Field(True, description="classify the NAT with two beacons")
    stream: bool = Field(
        True, description="relay over a WebSocket to the beacon when UDP is blocked"
    )
    beacon_stream: Annotated[str, Metavar("URL")] = Field(
        "", description="stream relay ws(s)://host:port/v1/relay (default: the registry's)"
    )
    stream_after: Seconds = Field(
        30.0, gt=0, description="seconds without any UDP answer before using the stream"
    )
    udp_retry_interval: Seconds = Field(
        5.0, gt=0, description="first wait, seconds, before trying UDP again while on the stream"
    )
    udp_retry_max_interval: Seconds = Field(
        60.0, gt=0, description="longest wait, seconds, between UDP tries while on the stream"
    )
    stream_ca_file: Annotated[str, Metavar("PATH")] = Field(
        "", description="CA bundle for wss:// (default: the system's)"
    )
    beacon_rtt_probe: bool = Field(
        False, description="let measured RTTs override the beacon the key hashes to"
    )
    refresh_interval: Seconds = Field(
        BEACON_REFRESH_INTERVAL, gt=0, description="seconds between beacon list refreshes"
    )
    refresh_jitter: Seconds = Field(
        BEACON_REFRESH_JITTER, ge=0, description="random seconds added to each refresh interval"
    )
    beacon_keepalive_interval: Seconds = Field(
        10.0, gt=0, description="seconds between registrations with the beacon"
    )
    beacon_dead_after: Seconds = Field(
        30.0, gt=0, description="seconds without a beacon reply before failing over"
    )
    beacon_quarantine: Seconds = Field(
        60.0, gt=0, description="seconds before a dead beacon is tried again"
    )
    heartbeat_interval: Seconds = Field(
        30.0, gt=0, description="seconds between registry heartbeats"
    )
    discover_timeout: Seconds = Field(
        2.0, gt=0, description="seconds to wait for a beacon's discover reply"
    )
    tick_interval: Seconds = Field(0.5, gt=0, description="seconds between peer upkeep rounds")
    udp_batch: bool = Field(
        True, description="recvmmsg/sendmmsg on the sockets where the platform has them"
    )
    udp_buffer: Annotated[int, Metavar("BYTES")] = Field(
        4 << 20,
        ge=0,
        description="receive and send buffer bytes asked for on both sockets (0: the system's)",
    )
    blackhole_threshold: Seconds = Field(
        DIRECT_BLACKHOLE_THRESHOLD,
        gt=0,
        description="seconds of silence on a direct path that count as one miss",
    )
    blackhole_misses: Count = Field(
        BLACKHOLE_MISSES_REQUIRED, ge=1, description="misses in a row that move a peer to relay"
    )
    direct_clears: Count = Field(
        DIRECT_CLEARS_REQUIRED,
        ge=1,
        description="direct receipts that clear a relay flag the sidecar set itself",
    )
    send_err_threshold: Count = Field(
        SEND_ERR_THRESHOLD,
        ge=1,
        description="ICMP-unreachable send errors that move a peer to relay",
    )
    max_relay_peers: Count = Field(
        MAX_RELAY_PEERS, ge=1, description="most peers with a relay flag"
    )
    max_peers: Count = Field(_N.max_peers, ge=1, description="most peers tracked")
    check_window: Seconds = Field(
        _N.check_window, gt=0, description="seconds a round of connectivity checks lasts"
    )
    check_interval: Seconds = Field(
        _N.check_interval, gt=0, description="seconds between probes within a check round"
    )
    reevaluate_interval: Seconds = Field(
        _N.reevaluate_interval, gt=0, description="seconds between path re-checks while direct"
    )
    one_way_rounds: Count = Field(
        _N.one_way_rounds, ge=1, description="unanswered keepalive probes that make a path one-way"
    )
    offline_after: Seconds = Field(
        _N.offline_after, gt=0, description="seconds of silence before a peer shows as offline"
    )
    probe_initial_interval: Seconds = Field(
        _N.probe_initial_interval,
        gt=0,
        description="first wait, seconds, before a relayed peer's next checks; doubles each time",
    )
    probe_max_interval: Seconds = Field(
        _N.probe_max_interval,
        gt=0,
        description="longest wait, seconds, between a relayed peer's rounds of checks",
    )
    peer_keepalive_interval: Seconds = Field(
        _N.keepalive_interval, gt=0, description="seconds between keepalives on a direct path"
    )
    peer_refresh_interval: Seconds = Field(
        _N.peer_refresh_interval,
        gt=0,
        description="seconds between registry look-ups of a known peer",
    )
    peer_idle_timeout: Seconds = Field(
        _N.peer_idle_timeout,
        gt=0,
        description="seconds a peer is kept without the application using it",
    )
    predict: bool = Field(
        _P.enabled,
        description="port prediction: a bounded spray that can make a pair of an "
        "endpoint-dependent (symmetric) and a port-restricted NAT direct (both sides need it)",
    )
    predict_sockets: Count = Field(
        _P.sockets, ge=1, le=1024, description="spray sockets the endpoint-dependent side opens"
    )
    predict_probes: Count = Field(
        _P.probes, ge=1, le=8192, description="ports the other side probes in one spray"
    )
    predict_rate: float = Field(_P.rate, gt=0, description="spray probes per second")
    predict_timeout: Seconds = Field(_P.timeout, gt=0, description="seconds one spray lasts")
    predict_after: Seconds = Field(
        _P.after, ge=0, description="seconds of unanswered checks before a spray is offered"
    )
    predict_retry_interval: Seconds = Field(
        _P.retry_interval, gt=0, description="first wait before a peer is sprayed again (doubles)"
    )
    predict_budget: float = Field(
        _P.budget_bytes, ge=1024, description="bytes all sprays may send at once (burst)"
    )
    predict_budget_rate: float = Field(
        _P.budget_rate, gt=0, description="bytes per second the spray budget refills"
    )
    predict_max_kept: Count = Field(
        _P.max_kept, ge=1, le=1024, description="spray sockets kept for direct paths, at most"
    )

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        text = value.strip().lower()
        if text and text != "none" and not re.fullmatch(NAME_PATTERN, text):
            raise ValueError(f"a node name is a DNS label (a-z, 0-9, '-', at most 63): {value!r}")
        return text

    @field_validator("http_listen")
    @classmethod
    def _check_http(cls, value: str) -> str:
        return "" if value.lower() in _OFF else check_host_port(value)

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

    def manager_config(self) -> ManagerConfig:
        """The routing Manager's thresholds."""
        return ManagerConfig(
            blackhole_threshold=self.blackhole_threshold,
            blackhole_misses_required=self.blackhole_misses,
            direct_clears_required=self.direct_clears,
            send_err_threshold=self.send_err_threshold,
            max_relay_peers=self.max_relay_peers,
        )

    def predict_config(self) -> PredictConfig:
        """Port prediction's switch and bounds."""
        return PredictConfig(
            enabled=self.predict,
            sockets=self.predict_sockets,
            probes=self.predict_probes,
            rate=self.predict_rate,
            burst=min(_P.burst, self.predict_probes),
            timeout=self.predict_timeout,
            after=self.predict_after,
            retry_interval=self.predict_retry_interval,
            retry_max_interval=max(_P.retry_max_interval, self.predict_retry_interval),
            budget_bytes=self.predict_budget,
            budget_rate=self.predict_budget_rate,
            max_kept=self.predict_max_kept,
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
