"""Registry settings: flags, env ``NATROUTE_REGISTRY_*``, a config file.

Built once in ``main()`` through the shared layer (:mod:`natroute._service.cli`)
and passed down (``create_app(settings)``); nothing reads the environment at
import time. The operator token is checked when the settings are built
(outside dev mode), so a weak token never starts a server.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, ClassVar, Final, Literal, Self

from pydantic import AfterValidator, Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from natroute._service.cli import ServiceSettings
from natroute._service.settings import Count, HostPort, Metavar, Seconds, check_secret_token
from natroute.routing.addr import split_host_port

from .models import check_name_or_ip_port

__all__ = ["DESCRIPTION", "DEV_TOKEN", "ENV_PREFIX", "Settings"]

#: The first paragraph of ``natroute-registry --help``.
DESCRIPTION = (
    "natroute registry: the HTTP service where nodes register their keys and candidates, "
    "resolve each other, and learn the live beacons; SQLite or PostgreSQL."
)

ENV_PREFIX: Final = "NATROUTE_REGISTRY_"
#: The operator token used in ``--dev`` mode when none is configured.
DEV_TOKEN: Final = "dev"


def _check_database_url(value: SecretStr | None) -> SecretStr | None:
    if value is None:
        return None
    url = value.get_secret_value().strip()
    if not url:
        return None
    if not url.startswith(("postgresql://", "postgres://")):
        raise ValueError(
            f"{ENV_PREFIX}DATABASE_URL (--database-url) must be a postgresql:// URL; "
            f"leave it unset for SQLite at {ENV_PREFIX}DB (--db)"
        )
    return SecretStr(url)


def _check_beacon_addr(value: str | None) -> str | None:
    return None if value is None else check_name_or_ip_port(value)


class Settings(ServiceSettings):
    """Every registry setting (env ``NATROUTE_REGISTRY_<FIELD>``, flag ``--<field>``)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX)
    renamed: ClassVar[Mapping[str, str]] = {"listen": "http_listen"}

    http_listen: HostPort = Field("0.0.0.0:9000", description="HTTP API")
    db: Annotated[Path, Metavar("PATH")] = Field(
        Path("registry.db"), description="SQLite database file (when no --database-url)"
    )
    database_url: Annotated[
        SecretStr | None, AfterValidator(_check_database_url), Metavar("URL")
    ] = Field(None, description="postgresql://user:password@host/db: PostgreSQL instead of SQLite")
    database_pool_size: Count = Field(10, ge=1, le=200, description="PostgreSQL connections")
    key_cache_size: Count = Field(131072, ge=0, description="node keys kept in memory")
    token: SecretStr = Field(
        SecretStr(""), description="operator bearer token (required unless --dev)"
    )
    dev: bool = Field(
        False, description="dev mode: a weak or no token is accepted (a lab, never a deployment)"
    )
    allow_local_endpoints: bool | None = Field(
        None, description="accept loopback and link-local node addresses (default: in dev mode)"
    )
    beacon_addr: Annotated[str | None, AfterValidator(_check_beacon_addr), Metavar("HOST:PORT")] = (
        Field(None, description="beacon handed out for relay_only nodes")
    )
    node_ttl: Seconds = Field(90.0, gt=0, description="seconds a node stays resolvable")
    beacon_ttl: Seconds = Field(60.0, gt=0, description="seconds a beacon stays listed")
    retention: Seconds = Field(
        30 * 86400.0, gt=0, description="seconds before silent records are purged"
    )
    signature_skew: Seconds = Field(
        60.0, gt=0, description="clock skew, seconds, accepted in signed requests"
    )
    sqlite_synchronous: Literal["FULL", "NORMAL"] = Field(
        "FULL", description="SQLite synchronous mode; NORMAL may lose the last writes on power loss"
    )
    max_body_bytes: Annotated[int, Metavar("BYTES")] = Field(
        16384, ge=1024, description="largest request body"
    )
    register_rate: Annotated[float, Metavar("PER_SECOND")] = Field(
        0.5, gt=0, description="registrations per second per client IP"
    )
    register_burst: Count = Field(10, ge=1, description="registration burst per client IP")
    rate_limit_clients: Count = Field(10000, ge=1, description="client IPs tracked")
    port_file: Annotated[Path | None, Metavar("PATH")] = Field(
        None, description="write the bound port here once listening (for --http-listen host:0)"
    )

    @model_validator(mode="after")
    def _check_token(self) -> Self:
        if not self.dev:
            token = check_secret_token(
                self.token.get_secret_value(),
                env=f"{ENV_PREFIX}TOKEN",
                flag="--token",
                hint="or run with --dev for a local test registry",
            )
            self.token = SecretStr(token)
        return self

    def postgres_url(self) -> str | None:
        """The PostgreSQL URL, or ``None`` for SQLite at ``db``."""
        return None if self.database_url is None else self.database_url.get_secret_value()

    def listen_addr(self) -> tuple[str, int]:
        """``http_listen`` split into host and port (brackets removed)."""
        return split_host_port(self.http_listen)

    def operator_token(self) -> str:
        """The bearer token operator endpoints require (stripped).

        Returns:
            The configured token, or :data:`DEV_TOKEN` in dev mode when none is set.
        """
        token = self.token.get_secret_value().strip()
        return token or DEV_TOKEN

    def local_endpoints_allowed(self) -> bool:
        """Whether nodes may register loopback and link-local addresses.

        ``allow_local_endpoints`` when set, else dev mode: a registry on a
        developer's machine serves sidecars on 127.0.0.1, a real one must not
        (a node could aim its peers at their own loopback services).
        """
        if self.allow_local_endpoints is not None:
            return self.allow_local_endpoints
        return self.dev
