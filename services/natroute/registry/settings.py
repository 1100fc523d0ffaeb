"""Registry settings: environment (``NATROUTE_REGISTRY_*``) overridden by flags.

Built once in ``main()`` and passed down (``create_app(settings)``); nothing
reads the environment at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Final, Literal

from pydantic import AfterValidator, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from natroute._service.settings import check_host_port as check_listen
from natroute.routing.addr import split_host_port

from .models import check_host_port

__all__ = ["DEV_TOKEN", "ENV_PREFIX", "MIN_TOKEN_LEN", "InsecureTokenError", "Settings"]

ENV_PREFIX: Final = "NATROUTE_REGISTRY_"
#: The operator token used in ``--dev`` mode when none is configured.
DEV_TOKEN: Final = "dev"
#: Shortest operator token accepted outside dev mode.
MIN_TOKEN_LEN: Final = 16
# Well-known placeholder tokens that are refused outside dev mode.
_DEFAULT_TOKENS: Final = frozenset(
    {"changeme", "change-me", "change_me", "dev", "secret", "token", "natroute", "password"}
)


class InsecureTokenError(ValueError):
    """The operator token is empty, a placeholder or too short (outside dev mode)."""


class Settings(BaseSettings):
    """Every registry setting; env name = ``NATROUTE_REGISTRY_`` + field name upper-cased."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")

    listen: Annotated[str, AfterValidator(check_listen)] = "0.0.0.0:9000"
    db: Path = Path("registry.db")
    token: SecretStr = SecretStr("")
    dev: bool = False
    beacon_addr: Annotated[str, AfterValidator(check_host_port)] | None = None
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

    def listen_addr(self) -> tuple[str, int]:
        """``listen`` split into host and port (brackets removed)."""
        return split_host_port(self.listen)

    def operator_token(self) -> str:
        """The bearer token operator endpoints require.

        Returns:
            The configured token, or :data:`DEV_TOKEN` in dev mode when none is set.

        Raises:
            InsecureTokenError: outside dev mode, the token is empty, a
                well-known placeholder or shorter than :data:`MIN_TOKEN_LEN`.
        """
        token = self.token.get_secret_value()
        if self.dev:
            return token or DEV_TOKEN
        if not token:
            raise InsecureTokenError(
                f"no operator token: set --token or {ENV_PREFIX}TOKEN (or run with --dev)"
            )
        if token.lower() in _DEFAULT_TOKENS or len(token) < MIN_TOKEN_LEN:
            raise InsecureTokenError(
                f"operator token is a placeholder or shorter than {MIN_TOKEN_LEN} characters"
            )
        return token
