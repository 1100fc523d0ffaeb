"""Validators shared by the services' pydantic settings (one rule, one place)."""

from __future__ import annotations

from natroute.routing.addr import split_host_port

__all__ = ["LOG_LEVELS", "check_host_port", "check_http_url", "check_log_level"]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def check_host_port(value: str) -> str:
    """``host:port`` or ``[v6]:port`` with a non-empty host; returned unchanged.

    Raises:
        ValueError: no port, a bad port, or an empty host.
    """
    host, _ = split_host_port(value)
    if not host:
        raise ValueError(f"missing host in {value!r}")
    return value


def check_http_url(value: str) -> str:
    """An http(s) base URL without its trailing slash; ``""`` stays ``""``.

    Raises:
        ValueError: any other scheme.
    """
    if value and not value.startswith(("http://", "https://")):
        raise ValueError(f"URL must be http(s): {value!r}")
    return value.rstrip("/")


def check_log_level(value: str) -> str:
    """A stdlib level name, lower-cased.

    Raises:
        ValueError: an unknown level.
    """
    if value.upper() not in LOG_LEVELS:
        raise ValueError(f"unknown log level {value!r}")
    return value.lower()
