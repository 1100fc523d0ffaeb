"""The one settings-and-command-line layer of every natroute daemon.

``natroute-beacon``, ``natroute-registry``, ``natroute-sidecar``,
``natroute-demo`` and ``natroute-probe`` each declare a pydantic-settings
class derived from :class:`ServiceSettings` and start through
:func:`service_main`, which builds it with :func:`build_settings`. One
option is one setting with three spellings (README.md, "Configuration"):

* the flag ``--http-listen 127.0.0.1:8080`` (the field name in kebab case);
* the environment variable ``<PREFIX>HTTP_LISTEN`` (the class's ``env_prefix``);
* the key ``http_listen`` (or ``http-listen``) of the ``--config`` file:
  TOML, YAML or JSON, by its suffix.

Flags win over the environment, the environment over the file, the file over
the defaults. Each layer is read by pydantic-settings' own sources
(:class:`~pydantic_settings.CliSettingsSource` on an ``argparse`` parser,
:class:`~pydantic_settings.EnvSettingsSource`, the TOML/YAML/JSON file
sources) and the merged values are validated once, so an error can say where
the bad value came from. A renamed setting keeps its old flag, environment
name and file key working (the class's :attr:`ServiceSettings.renamed`
table); using one logs ``setting_deprecated``.

pydantic-settings does not generate shell completion scripts, so the daemons
have none.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
import textwrap
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import (
    Annotated,
    Any,
    ClassVar,
    Final,
    Generic,
    Literal,
    NamedTuple,
    TypeVar,
    get_args,
    get_origin,
)

from pydantic import BeforeValidator, Field, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    CliSettingsSource,
    EnvSettingsSource,
    JsonConfigSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
    YamlConfigSettingsSource,
)
from pydantic_settings import SettingsError as LibrarySettingsError

from .settings import Metavar
from .version import natroute_version

__all__ = [
    "Built",
    "InvalidSettings",
    "LogLevel",
    "ServiceSettings",
    "StartupError",
    "bind_failure",
    "build_settings",
    "describe_settings_error",
    "option_names",
    "service_main",
    "setting_failure",
]

_log = logging.getLogger(__name__)

S = TypeVar("S", bound="ServiceSettings")

LogLevel = Literal["debug", "info", "warning", "error", "critical"]


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


class ServiceSettings(BaseSettings):
    """What every daemon's settings have: the config file and logging."""

    model_config = SettingsConfigDict(extra="forbid")

    #: Renamed settings, old field name -> new one (the old flag, variable and key still work).
    renamed: ClassVar[Mapping[str, str]] = {}

    config: Annotated[Path | None, Metavar("FILE")] = Field(
        None,
        description="settings file, TOML, YAML or JSON by its suffix, keys named like the "
        "options; the environment and flags win over it",
    )
    log_level: Annotated[LogLevel, BeforeValidator(_lower)] = Field(
        "info", description="least severe level logged"
    )
    log_format: Annotated[Literal["json", "text"], BeforeValidator(_lower)] = Field(
        "json", description="json: one object per line; text: readable lines"
    )


class InvalidSettings(Exception):
    """Settings that cannot be used; ``str()`` has one line per problem, each naming the setting."""


class StartupError(Exception):
    """A daemon cannot start because of a setting; ``str()`` is one line for the operator.

    Build it with :func:`setting_failure` or :func:`bind_failure`, which name the
    flag, the environment variable, the value and what to do.
    """


class Built(NamedTuple, Generic[S]):
    """What :func:`build_settings` returns.

    Attributes:
        settings: the validated settings.
        deprecated: ``(old, new)`` names of renamed settings that were used.
    """

    settings: S
    deprecated: tuple[tuple[str, str], ...]


def option_names(cls: type[BaseSettings], field: str) -> tuple[str, str]:
    """A field's flag and environment variable: ``("--http-listen", "NATROUTE_X_HTTP_LISTEN")``.

    Args:
        cls: the settings class (its ``env_prefix``).
        field: the field name.
    """
    prefix = str(cls.model_config.get("env_prefix", ""))
    return "--" + field.replace("_", "-"), prefix + field.upper()


def setting_failure(
    cls: type[BaseSettings], field: str, value: object, problem: str, remedy: str
) -> StartupError:
    """``<problem> <value> (--flag / ENV): <remedy>`` as a :class:`StartupError`.

    Args:
        cls: the settings class.
        field: the setting at fault.
        value: its value.
        problem: what failed, e.g. ``cannot open the database``.
        remedy: what to do, e.g. ``create the directory or choose another path``.
    """
    flag, env = option_names(cls, field)
    return StartupError(f"{problem} {value} ({flag} / {env}): {remedy}")


_BIND_REMEDIES: Final = {
    errno.EADDRINUSE: "free the port or choose another address",
    errno.EADDRNOTAVAIL: "choose an address this host has, or 0.0.0.0",
    errno.EACCES: "choose a port above 1023, or allow the program to bind low ports",
}


def bind_failure(cls: type[BaseSettings], field: str, value: str, exc: OSError) -> StartupError:
    """A listen address that cannot be bound, with the system's reason and a remedy for it."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    remedy = _BIND_REMEDIES.get(exc.errno or 0, "choose another address")
    return setting_failure(cls, field, value, "cannot listen on", f"{reason}; {remedy}")


# -- help text --------------------------------------------------------------------


def _metavar(info: FieldInfo) -> str:
    for meta in info.metadata:
        if isinstance(meta, Metavar):
            return str(meta)
    kind = info.annotation
    if get_origin(kind) is not Literal:
        args = [a for a in get_args(kind) if a is not type(None)]
        kind = args[0] if len(args) == 1 else kind
    if get_origin(kind) is Literal:
        return "{" + ",".join(str(a) for a in get_args(kind)) + "}"
    names: dict[object, str] = {int: "N", float: "NUMBER", SecretStr: "TOKEN", Path: "PATH"}
    return names.get(kind, "TEXT")


def _shown_default(info: FieldInfo) -> str | None:
    default = info.get_default(call_default_factory=True)
    if default is None or isinstance(default, SecretStr) or default in ("", ()):
        return None
    if isinstance(default, bool):
        return "on" if default else "off"
    if isinstance(default, float):
        return format(default, ".15g")
    return str(default)


def _help(info: FieldInfo) -> str:
    """The description and the default: ``text (default: 30)``, ``text (0: off; default: 256)``."""
    text = info.description or ""
    shown = _shown_default(info)
    if shown is not None and "default:" not in text:
        if text.endswith(")"):
            text = f"{text[:-1]}; default: {shown})"
        else:
            text = f"{text} (default: {shown})" if text else f"default: {shown}"
    return text.replace("%", "%%")


def _argument_adder(cls: type[BaseSettings]) -> Callable[..., Any]:
    """An ``add_argument`` for CliSettingsSource that writes our metavars and help."""

    def add_argument(parser: Any, *args: Any, **kwargs: Any) -> Any:
        info = cls.model_fields.get(str(kwargs.get("dest", "")))
        if info is not None:
            kwargs["help"] = _help(info)
            if "metavar" in kwargs:
                kwargs["metavar"] = _metavar(info)
        return parser.add_argument(*args, **kwargs)

    return add_argument


_WIDTH: Final = 100


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32, width=_WIDTH)


def _epilog(cls: type[BaseSettings]) -> str:
    flag, env = option_names(cls, "log_level")
    prefix = str(cls.model_config.get("env_prefix", ""))
    return textwrap.fill(
        f"Every option is also read from the environment as {prefix}<OPTION> (upper case, "
        f"'-' as '_': {flag} is {env}) and from the --config file as a key "
        '(log_level = "debug"). Flags win over the environment, the environment over the '
        "file. Exit status: 0 after SIGINT or SIGTERM; 2 for a setting that cannot be used, "
        "with one line on stderr naming it.",
        _WIDTH,
    )


# -- the layers -------------------------------------------------------------------


_FILE_SOURCES: Final[dict[str, Callable[[type[BaseSettings], Path], Any]]] = {
    ".toml": lambda cls, path: TomlConfigSettingsSource(cls, toml_file=path).toml_data,
    ".yaml": lambda cls, path: YamlConfigSettingsSource(cls, yaml_file=path).yaml_data,
    ".yml": lambda cls, path: YamlConfigSettingsSource(cls, yaml_file=path).yaml_data,
    ".json": lambda cls, path: JsonConfigSettingsSource(cls, json_file=path).json_data,
}


def _first_lines(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return "; ".join(lines)[:200] or type(exc).__name__


def _read_file(
    cls: type[ServiceSettings], path: Path, used: list[tuple[str, str]]
) -> dict[str, Any]:
    """The config file's settings by field name (renamed keys mapped to the new name).

    Raises:
        InvalidSettings: no such file, unreadable, malformed, or an unknown key.
    """
    flag, env = option_names(cls, "config")
    where = f"{flag} / {env} {path}"
    reader = _FILE_SOURCES.get(path.suffix.lower())
    if reader is None:
        raise InvalidSettings(f"{where}: use a .toml, .yaml, .yml or .json file")
    if not path.is_file():
        raise InvalidSettings(f"{where}: no such file")
    try:
        data = reader(cls, path)
    except Exception as exc:  # OSError, the parsers' own errors (yaml's are no ValueError)
        if "dictionary update sequence" in str(exc):  # the sources dict.update() a list
            raise InvalidSettings(f"{where}: the top level must be a table of settings") from exc
        raise InvalidSettings(f"{where}: cannot read it: {_first_lines(exc)}") from exc
    if not isinstance(data, dict):  # pragma: no cover - the sources only return dicts
        raise InvalidSettings(f"{where}: the top level must be a table of settings")
    out: dict[str, Any] = {}
    unknown = []
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name in cls.renamed:
            used.append((str(key), cls.renamed[name]))
            out.setdefault(cls.renamed[name], value)
        elif name in cls.model_fields and name != "config":
            out[name] = value
        else:
            unknown.append(str(key))
    if unknown:
        raise InvalidSettings(f"{where}: unknown setting(s) {', '.join(unknown)} (see --help)")
    return out


def _renamed_flags(
    cls: type[ServiceSettings], argv: Sequence[str], used: list[tuple[str, str]]
) -> list[str]:
    flags = {
        option_names(cls, old)[0]: option_names(cls, new)[0] for old, new in cls.renamed.items()
    }
    out = []
    for arg in argv:
        name, eq, value = arg.partition("=")
        if name in flags:
            used.append((name, flags[name]))
            arg = flags[name] + eq + value
        out.append(arg)
    return out


def _renamed_env(
    cls: type[ServiceSettings], env: dict[str, Any], used: list[tuple[str, str]]
) -> dict[str, str]:
    """Old environment names still set; their values fill in unset new ones. Returns origins."""
    origin = {}
    for old, new in cls.renamed.items():
        old_env, new_env = option_names(cls, old)[1], option_names(cls, new)[1]
        value = os.environ.get(old_env)
        if value is None:
            continue
        used.append((old_env, new_env))
        if new not in env:
            env[new] = value
            origin[new] = f"{old_env}, deprecated"
    return origin


def _parser(cls: type[BaseSettings], prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        usage="%(prog)s [options]",
        description=textwrap.fill(description, _WIDTH),
        epilog=_epilog(cls),
        formatter_class=_formatter,
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=natroute_version())
    return parser


def build_settings(
    cls: type[S], argv: Sequence[str], *, prog: str, description: str = ""
) -> Built[S]:
    """A daemon's settings from its flags, the environment and its ``--config`` file.

    ``--help`` and ``--version`` print and exit 0; an unknown flag prints the
    usage and exits 2 (argparse).

    Args:
        cls: the daemon's settings class.
        argv: the command line without the program name.
        prog: the program name for ``--help``.
        description: the first paragraph of ``--help``.

    Returns:
        The settings and the renamed settings that were used.

    Raises:
        InvalidSettings: a value, or the config file, cannot be used.
        SystemExit: ``--help``, ``--version`` or a usage error.
    """
    used: list[tuple[str, str]] = []
    cli: CliSettingsSource[argparse.ArgumentParser] = CliSettingsSource(
        cls,
        root_parser=_parser(cls, prog, description),
        cli_implicit_flags=True,
        cli_kebab_case=True,
        cli_hide_none_type=True,
        cli_avoid_json=True,
        case_sensitive=True,
        add_argument_method=_argument_adder(cls),
        formatter_class=_formatter,
    )
    flags = dict(cli(args=_renamed_flags(cls, argv, used))())
    env = dict(EnvSettingsSource(cls)())
    origin = {field: option_names(cls, field)[1] for field in env}
    origin |= _renamed_env(cls, env, used)
    origin |= {field: option_names(cls, field)[0] for field in flags}
    config = flags.get("config") or env.get("config")
    data: dict[str, Any] = {}
    if config:
        path = Path(str(config)).expanduser()
        data = _read_file(cls, path, used)
        origin = {key: f"{key} in {path}" for key in data} | origin
    try:
        settings = cls(**(data | env | flags))
    except ValidationError as exc:
        raise InvalidSettings(describe_settings_error(exc, cls, origin)) from exc
    except LibrarySettingsError as exc:  # e.g. a value the library could not decode
        raise InvalidSettings(_first_lines(exc)) from exc
    return Built(settings, tuple(dict.fromkeys(used)))


def describe_settings_error(
    exc: ValidationError, cls: type[BaseSettings], origin: Mapping[str, str] | None = None
) -> str:
    """One line per invalid setting, naming its flag, its variable and where the value came from.

    Args:
        exc: pydantic's error for a daemon's settings.
        cls: the settings class (its ``env_prefix`` names the variables).
        origin: field -> where its value was read (a flag, a variable, a file key).
    """
    lines = []
    for err in exc.errors():
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        loc = err.get("loc") or ()
        if not loc:  # a rule across settings: its message names them
            lines.append(message)
            continue
        field = str(loc[0])
        flag, env = option_names(cls, field)
        shown = err.get("input")
        got = ""
        if not (isinstance(shown, dict) or shown is None):
            where = (origin or {}).get(field)
            got = f" (got {str(shown)[:80]!r}" + (f" from {where})" if where else ")")
        lines.append(f"{flag} / {env}: {message}{got}")
    return "\n".join(lines)


# -- main() -----------------------------------------------------------------------


def service_main(
    cls: type[S],
    argv: Sequence[str] | None,
    *,
    prog: str,
    description: str,
    serve: Callable[[S], Coroutine[Any, Any, None]],
    use_uvloop: bool = True,
    failures: tuple[type[BaseException], ...] = (),
) -> int:
    """A daemon's ``main()``: settings, logging, then ``serve(settings)`` until a signal.

    Invalid settings and start-up failures (:class:`StartupError` and
    ``failures``) end the process with one line on stderr (``<prog>: ...``)
    and status 2; their traceback is logged at debug level (``start_failed``).

    Args:
        cls: the daemon's settings class.
        argv: the command line without the program name (default: ``sys.argv[1:]``).
        prog: the program name.
        description: the first paragraph of ``--help``.
        serve: runs the daemon until SIGINT or SIGTERM.
        use_uvloop: run on uvloop when it is installed.
        failures: more exception types that mean "cannot start" (their
            messages name the setting).

    Returns:
        0 after a clean stop, 2 for settings that cannot be used.
    """
    from .logging import configure_logging
    from .run import run

    args = sys.argv[1:] if argv is None else list(argv)
    try:
        settings, deprecated = build_settings(cls, args, prog=prog, description=description)
    except InvalidSettings as exc:
        print(f"{prog}: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, fmt=settings.log_format)
    for old, new in deprecated:
        _log.warning("setting_deprecated", extra={"old": old, "new": new})
    caught: tuple[type[BaseException], ...] = (StartupError, *failures)
    try:
        run(serve(settings), use_uvloop=use_uvloop)
    except caught as exc:
        _log.debug("start_failed", exc_info=True)
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    return 0
