"""Registry settings: environment (``NATROUTE_REGISTRY_*``) overridden by flags.

Built once in ``main()`` and passed down (``create_app(settings)``); nothing
reads the environment at import time. The operator token is checked when the
settings are built (outside dev mode), so a weak token never starts a server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Final, Literal, Self

from pydantic import AfterValidator, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from natroute._service.settings import check_host_port as check_listen_addr
from natroute._service.settings import check_secret_token
from natroute.routing.addr import split_host_port

from .models import check_name_or_ip_port

__all__ = ["DEV_TOKEN", "ENV_PREFIX", "Settings"]

ENV_PREFIX: Final = "NATROUTE_REGISTRY_"
#: The operator token used in ``--dev`` mode when none is configured.
DEV_TOKEN: Final = "dev"


def _check_database_url(value: SecretStr) -> SecretStr | None:
    url = value.get_secret_value().strip()
    if not url:
        return None
    if not url.startswith(("postgresql://", "postgres://")):
        raise ValueError(
            f"{ENV_PREFIX}DATABASE_URL (--database-url) must be a postgresql:// URL; "
            f"leave it unset for SQLite at {ENV_PREFIX}DB (--db)"
        )
    return SecretStr(url)


class Settings(BaseSettings):
    """Every registry setting; env name = ``NATROUTE_REGISTRY_`` + field name upper-cased."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")

    listen: Annotated[str, AfterValidator(check_listen_addr)] = "0.0.0.0:9000"
    db: Path = Path("registry.db")
    database_url: Annotated[SecretStr, AfterValidator(_check_database_url)] | None = None
    database_pool_size: int = Field(default=10, ge=1, le=200)
    key_cache_size: int = Field(default=131072, ge=0)
    token: SecretStr = SecretStr("")
    dev: bool = False
    allow_local_endpoints: bool | None = None
    beacon_addr: Annotated[str, AfterValidator(check_name_or_ip_port)] | None = None
    node_ttl: float = Field(default=90.0, gt=0)
    beacon_ttl: float = Field(default=60.0, gt=0)
    retention: float = Field(default=30 * 86400.0, gt=0)
    signature_skew: float = Field(default=60.0, gt=0)
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    max_body_bytes: int = Field(default=16384, ge=1024)
    register_rate: float = Field(default=0.5, gt=0)
    register_burst: int = Field(default=10, ge=1)
    rate_limit_clients: int = Field(default=10000, ge=1)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    port_file: Path | None = None

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
        """``listen`` split into host and port (brackets removed)."""
        return split_host_port(self.listen)

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
