"""Validators and value types shared by the services' pydantic settings (one rule, one place).

The annotated types carry their ``--help`` placeholder (:class:`Metavar`), so
the same kind of value reads the same in every daemon's help
(:mod:`natroute._service.cli`).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final

from pydantic import AfterValidator, BeforeValidator

from natroute.routing.addr import split_host_port

__all__ = [
    "MIN_TOKEN_LEN",
    "Count",
    "HostPort",
    "HostPortList",
    "HttpUrl",
    "Metavar",
    "Seconds",
    "WeakTokenError",
    "check_host_port",
    "check_http_url",
    "check_secret_token",
    "join_list",
]
#: Shortest secret token a service accepts as a server (outside dev mode).
MIN_TOKEN_LEN: Final = 16
#: Fewest distinct characters a token may use ("abababab…" is no secret).
_MIN_DISTINCT: Final = 5
# Words that mark a token someone forgot to replace, alone or repeated
# ("changemechangeme"), compared without case and separators.
_PLACEHOLDER_WORDS: Final = (
    "changeme",
    "replaceme",
    "password",
    "passwd",
    "secret",
    "token",
    "natroute",
    "admin",
    "default",
    "example",
    "test",
    "dev",
    "letmein",
    "qwerty",
    "1234567890",
    "0123456789",
)
_PLACEHOLDER: Final = re.compile("(?:" + "|".join(_PLACEHOLDER_WORDS) + ")+")
_PLACEHOLDER_PREFIXES: Final = ("changeme", "replaceme", "your", "placeholder", "insert")
_SEPARATORS: Final = re.compile(r"[\s_.\-]+")


class WeakTokenError(ValueError):
    """A secret token fails the strength rules; the message names the setting."""


def check_secret_token(
    value: str, *, env: str, flag: str, allow_empty: bool = False, hint: str = ""
) -> str:
    """The strength rules for a token a service accepts as a server.

    The token is stripped of surrounding white space, then must be at least
    :data:`MIN_TOKEN_LEN` characters, use at least five distinct characters
    (so not ``aaaaaaaaaaaaaaaa`` or 16 spaces or ``0000000000000000``) and not
    be a known placeholder (``changeme``, ``changemechangeme``,
    ``your-token-here``, ``password``…). Services call it outside their dev
    mode only.

    Args:
        value: the configured token.
        env: its environment variable, e.g. ``NATROUTE_REGISTRY_TOKEN``.
        flag: its command-line flag, e.g. ``--token``.
        allow_empty: an empty token is accepted (the feature is then off).
        hint: appended to the message (e.g. how to run without a token).

    Returns:
        The stripped token.

    Raises:
        WeakTokenError: the token breaks a rule; the message names ``env``
            and ``flag`` and says which rule.
    """
    token = value.strip()
    if not token:
        if allow_empty:
            return ""
        problem = "is only white space" if value else "is empty"
    elif len(token) < MIN_TOKEN_LEN:
        problem = f"is shorter than {MIN_TOKEN_LEN} characters"
    elif len(set(token)) < _MIN_DISTINCT:
        problem = f"uses fewer than {_MIN_DISTINCT} distinct characters"
    elif _is_placeholder(token):
        problem = "is a well-known placeholder"
    else:
        return token
    tail = f"; {hint}" if hint else ""
    raise WeakTokenError(
        f"{env} ({flag}) {problem}: use a random secret of at least {MIN_TOKEN_LEN} "
        f"characters, e.g. `openssl rand -hex 20`{tail}"
    )


def _is_placeholder(token: str) -> bool:
    compact = _SEPARATORS.sub("", token.lower())
    return _PLACEHOLDER.fullmatch(compact) is not None or compact.startswith(_PLACEHOLDER_PREFIXES)


def check_host_port(value: str) -> str:
    """``host:port`` or ``[v6]:port`` with a non-empty host; returned unchanged.

    A syntax check only (any host text, a wildcard bind address included), for
    listen and peer settings; the registry's wire models have stricter rules of
    their own (IP literals for node addresses).

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


def join_list(value: Any) -> Any:
    """A list (from a config file) as the comma-separated text the env and flags use."""
    if isinstance(value, list | tuple):
        return ",".join(str(item) for item in value)
    return value


class Metavar(str):
    """Field metadata: the placeholder ``--help`` shows for the value (``HOST:PORT``)."""

    __slots__ = ()


#: ``host:port`` (or ``[v6]:port``), checked by :func:`check_host_port`.
HostPort = Annotated[str, AfterValidator(check_host_port), Metavar("HOST:PORT")]
#: Comma-separated ``host:port`` entries (a list in a config file); entries are not checked here.
HostPortList = Annotated[str, BeforeValidator(join_list), Metavar("HOST:PORT,...")]
#: An http(s) base URL without its trailing slash, or ``""``.
HttpUrl = Annotated[str, AfterValidator(check_http_url), Metavar("URL")]
#: A duration in seconds.
Seconds = Annotated[float, Metavar("SECONDS")]
#: A count.
Count = Annotated[int, Metavar("N")]
