"""The shared settings layer: flags over env over the file, renamed settings, errors, help."""

from __future__ import annotations

import errno
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, ClassVar

import pytest
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from natroute._service.cli import (
    InvalidSettings,
    ServiceSettings,
    StartupError,
    bind_failure,
    build_settings,
    option_names,
    setting_failure,
)
from natroute._service.settings import HostPort, HostPortList, Metavar, Seconds
from natroute._service.version import natroute_version


class Toy(ServiceSettings):
    """A daemon's settings in miniature."""

    model_config = SettingsConfigDict(env_prefix="NATROUTE_TOY_")
    renamed: ClassVar[Mapping[str, str]] = {"http": "http_listen", "udp": "listen"}

    listen: HostPort = Field("0.0.0.0:9001", description="UDP socket")
    http_listen: Annotated[str, Metavar("HOST:PORT")] = Field(
        "127.0.0.1:8080", description="HTTP server; 'off' disables it"
    )
    peers: HostPortList = Field("", description="peer beacons")
    token: SecretStr = Field(SecretStr(""), description="a bearer token")
    relay_only: bool | None = Field(None, description="always relay (default: from the NAT)")
    stream: bool = Field(True, description="serve the stream relay")
    after: Seconds = Field(30.0, gt=0, description="seconds before the stream")
    quota: int = Field(256, ge=0, description="most nodes per host (0: no limit)")
    rate: float = Field(12_500_000.0, description="bytes per second")
    a_cert: str = Field("", description="certificate")
    a_key: str = Field("", description="key")

    @field_validator("http_listen")
    @classmethod
    def _off(cls, value: str) -> str:
        return "" if value == "off" else value

    @model_validator(mode="after")
    def _pair(self) -> Toy:
        if bool(self.a_cert) != bool(self.a_key):
            raise ValueError("--a-cert and --a-key go together")
        return self


def _build(argv: list[str]) -> Toy:
    return build_settings(Toy, argv, prog="natroute-toy").settings


@pytest.fixture(autouse=True)
def _no_toy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LISTEN", "UDP", "HTTP", "HTTP_LISTEN", "PEERS", "CONFIG", "AFTER", "LOG_LEVEL"):
        monkeypatch.delenv(f"NATROUTE_TOY_{name}", raising=False)


def test_defaults_and_flags() -> None:
    toy = _build([])
    assert (toy.listen, toy.http_listen, toy.relay_only, toy.stream) == (
        "0.0.0.0:9001",
        "127.0.0.1:8080",
        None,
        True,
    )
    assert (toy.log_level, toy.log_format, toy.config) == ("info", "json", None)
    toy = _build(["--listen", "[::]:1", "--relay-only", "--no-stream", "--log-level", "DEBUG"])
    assert (toy.listen, toy.relay_only, toy.stream, toy.log_level) == (
        "[::]:1",
        True,
        False,
        "debug",
    )
    assert _build(["--no-relay-only"]).relay_only is False


def test_flags_win_over_env_which_wins_over_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "toy.toml"
    config.write_text('listen = "10.0.0.1:1"\nafter = 5\nhttp-listen = "10.0.0.1:2"\n')
    monkeypatch.setenv("NATROUTE_TOY_CONFIG", str(config))
    monkeypatch.setenv("NATROUTE_TOY_AFTER", "7")
    toy = _build(["--http-listen", "10.0.0.1:3"])
    assert (toy.listen, toy.after, toy.http_listen) == ("10.0.0.1:1", 7.0, "10.0.0.1:3")
    assert toy.config == config


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("toy.toml", 'peers = ["a:1", "b:2"]\nstream = false\nafter = 2.5\n'),
        ("toy.yaml", "peers: [a:1, b:2]\nstream: false\nafter: 2.5\n"),
        ("toy.yml", "peers: a:1,b:2\nstream: false\nafter: 2.5\n"),
        ("toy.json", json.dumps({"peers": ["a:1", "b:2"], "stream": False, "after": 2.5})),
    ],
)
def test_config_file_formats(tmp_path: Path, name: str, text: str) -> None:
    config = tmp_path / name
    config.write_text(text)
    toy = _build(["--config", str(config)])
    assert (toy.peers, toy.stream, toy.after) == ("a:1,b:2", False, 2.5)


@pytest.mark.parametrize(
    ("name", "text", "problem"),
    [
        ("toy.toml", "lisen = 1\n", "unknown setting(s) lisen (see --help)"),
        ("toy.toml", "config = 'other.toml'\n", "unknown setting(s) config"),
        ("toy.toml", "listen = \n", "cannot read it: "),
        ("toy.yaml", "listen: [\n", "cannot read it: "),
        ("toy.json", "[1, 2]", "the top level must be a table of settings"),
        ("toy.ini", "listen=1\n", "use a .toml, .yaml, .yml or .json file"),
    ],
)
def test_config_file_errors_name_the_file(
    tmp_path: Path, name: str, text: str, problem: str
) -> None:
    config = tmp_path / name
    config.write_text(text)
    with pytest.raises(InvalidSettings) as info:
        _build(["--config", str(config)])
    message = str(info.value)
    assert message.startswith(f"--config / NATROUTE_TOY_CONFIG {config}: ")
    assert problem in message
    assert "\n" not in message


def test_a_missing_config_file() -> None:
    with pytest.raises(InvalidSettings, match=r"no-such\.toml: no such file$"):
        _build(["--config", "/no-such.toml"])


def test_renamed_settings_still_work_and_are_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = build_settings(Toy, ["--http=10.0.0.1:1"], prog="t")
    assert built.settings.http_listen == "10.0.0.1:1"
    assert built.deprecated == (("--http", "--http-listen"),)
    monkeypatch.setenv("NATROUTE_TOY_HTTP", "10.0.0.1:2")
    built = build_settings(Toy, [], prog="t")
    assert built.settings.http_listen == "10.0.0.1:2"
    assert built.deprecated == (("NATROUTE_TOY_HTTP", "NATROUTE_TOY_HTTP_LISTEN"),)
    monkeypatch.setenv("NATROUTE_TOY_HTTP_LISTEN", "10.0.0.1:3")
    assert _build([]).http_listen == "10.0.0.1:3"  # the new name wins
    config = tmp_path / "toy.toml"
    config.write_text('http = "10.0.0.1:4"\n')
    monkeypatch.delenv("NATROUTE_TOY_HTTP")
    monkeypatch.delenv("NATROUTE_TOY_HTTP_LISTEN")
    built = build_settings(Toy, ["--config", str(config)], prog="t")
    assert built.settings.http_listen == "10.0.0.1:4"
    assert built.deprecated == (("http", "http_listen"),)


def test_invalid_values_name_flag_variable_and_origin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "toy.toml"
    config.write_text('listen = "nohost"\n')
    monkeypatch.setenv("NATROUTE_TOY_AFTER", "-1")
    monkeypatch.setenv("NATROUTE_TOY_LOG_LEVEL", "loud")
    with pytest.raises(InvalidSettings) as info:
        _build(["--config", str(config), "--quota", "-2", "--a-cert", "c.pem"])
    lines = str(info.value).splitlines()
    assert lines[0].startswith("--log-level / NATROUTE_TOY_LOG_LEVEL: Input should be 'debug'")
    assert lines[0].endswith("(got 'loud' from NATROUTE_TOY_LOG_LEVEL)")
    assert lines[1] == (
        "--listen / NATROUTE_TOY_LISTEN: missing port in address 'nohost' "
        f"(got 'nohost' from listen in {config})"
    )
    assert lines[2] == (
        "--after / NATROUTE_TOY_AFTER: Input should be greater than 0 "
        "(got '-1' from NATROUTE_TOY_AFTER)"
    )
    assert lines[3] == (
        "--quota / NATROUTE_TOY_QUOTA: Input should be greater than or equal to 0 "
        "(got '-2' from --quota)"
    )
    assert len(lines) == 4  # the pair rule runs once the fields are valid
    monkeypatch.delenv("NATROUTE_TOY_AFTER")
    monkeypatch.delenv("NATROUTE_TOY_LOG_LEVEL")
    with pytest.raises(InvalidSettings, match=r"^--a-cert and --a-key go together$"):
        _build(["--a-cert", "c.pem"])


def test_an_old_variable_is_named_as_the_origin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NATROUTE_TOY_UDP", "nope")
    with pytest.raises(InvalidSettings, match=r"\(got 'nope' from NATROUTE_TOY_UDP, deprecated\)$"):
        _build([])


def test_unknown_flags_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        _build(["--lisen", "x:1"])
    assert info.value.code == 2
    assert "unrecognized arguments: --lisen" in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        _build(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == natroute_version() + "\n"
    assert re.fullmatch(r"natroute \d+\.\d+\.\d+\S*", natroute_version())


def test_help_shows_placeholders_defaults_and_the_variables(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        build_settings(Toy, ["--help"], prog="natroute-toy", description="the toy daemon")
    text = capsys.readouterr().out
    assert text.startswith("usage: natroute-toy [options]\n\nthe toy daemon\n")
    flat = " ".join(text.split())
    for shown in (
        "--listen HOST:PORT UDP socket (default: 0.0.0.0:9001)",
        "--http-listen HOST:PORT HTTP server; 'off' disables it (default: 127.0.0.1:8080)",
        "--peers HOST:PORT,... peer beacons",
        "--token TOKEN a bearer token",
        "--relay-only, --no-relay-only always relay (default: from the NAT)",
        "--stream, --no-stream serve the stream relay (default: on)",
        "--after SECONDS seconds before the stream (default: 30)",
        "--quota N most nodes per host (0: no limit; default: 256)",
        "--rate NUMBER bytes per second (default: 12500000)",
        "--config FILE settings file",
        "--log-format {json,text}",
        "NATROUTE_TOY_<OPTION>",
    ):
        assert shown in flat, shown
    for wrong in ("SecretStr", "{bool,null}", "(default: )", "``", "null", "None", "--http "):
        assert wrong not in text, wrong
    assert not re.search(r"\bstr\b", text)


def test_failures_name_flag_variable_value_and_remedy() -> None:
    assert option_names(Toy, "http_listen") == ("--http-listen", "NATROUTE_TOY_HTTP_LISTEN")
    error = setting_failure(Toy, "a_cert", "/c.pem", "cannot use the certificate", "fix it")
    assert (
        str(error) == "cannot use the certificate /c.pem (--a-cert / NATROUTE_TOY_A_CERT): fix it"
    )
    error = bind_failure(Toy, "listen", "127.0.0.1:1", OSError(98, "Address already in use"))
    assert isinstance(error, StartupError)
    assert str(error) == (
        "cannot listen on 127.0.0.1:1 (--listen / NATROUTE_TOY_LISTEN): Address already in use; "
        "free the port or choose another address"
    )
    foreign = OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")
    assert str(bind_failure(Toy, "listen", "192.0.2.1:1", foreign)).endswith(
        ": Cannot assign requested address; choose an address this host has, or 0.0.0.0"
    )
    low = OSError(errno.EACCES, "Permission denied")
    assert "choose a port above 1023" in str(bind_failure(Toy, "listen", "0.0.0.0:80", low))
    unknown = bind_failure(Toy, "listen", "nohost.invalid:1", OSError("Name or service not known"))
    assert str(unknown).endswith(": Name or service not known; choose another address")
