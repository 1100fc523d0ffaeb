"""Settings parsing: flags, env (in a child process), precedence, validation."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from pydantic import ValidationError

from natroute._service.cli import build_settings
from natroute.beacon.settings import Settings, derive_beacon_id

_CHILD = (
    "import sys; from natroute._service.cli import build_settings; "
    "from natroute.beacon.settings import Settings; "
    "print(build_settings(Settings, sys.argv[1:], prog='b').settings.model_dump_json())"
)


def _built(argv: list[str]) -> Settings:
    return build_settings(Settings, argv, prog="natroute-beacon").settings


def _child_settings(env: dict[str, str], *argv: str) -> dict[str, object]:
    """Settings as built by a fresh process with exactly this environment."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NATROUTE_BEACON_")}
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, *argv],
        env=clean | env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    parsed: dict[str, object] = json.loads(result.stdout)
    return parsed


def test_flags_parse_into_fields() -> None:
    settings = _built(
        [
            "--listen",
            "[::]:9100",
            "--http-listen",
            "off",
            "--beacon-id",
            "42",
            "--peers",
            "b1:9001, 10.0.0.2:9001,",
            "--registry-url",
            "http://registry:9000/",
            "--registry-token",
            "zq-secret-91",
            "--advertise",
            "203.0.113.1:9100",
            "--no-strict",
            "--node-ttl",
            "120",
            "--relay-rate",
            "0",
            "--node-quota-host",
            "16",
            "--node-quota-net",
            "0",
            "--require-signature",
            "--log-level",
            "DEBUG",
        ]
    )
    assert settings.listen == "[::]:9100"
    assert settings.http_listen == ""
    assert settings.beacon_id == 42
    assert settings.peers == ("b1:9001", "10.0.0.2:9001")
    assert settings.registry_url == "http://registry:9000"
    assert settings.registry_token is not None
    assert settings.registry_token.get_secret_value() == "zq-secret-91"
    assert "zq-secret-91" not in repr(settings)
    assert settings.advertise == "203.0.113.1:9100"
    assert settings.strict is False
    assert settings.log_level == "debug"
    config = settings.core_config(42)
    assert config.node_ttl == 120.0
    assert not config.relay_packet_limit.enabled
    assert config.strict is False
    assert (config.node_quota_host, config.node_quota_net) == (16, 0)
    assert config.require_signature is True


def test_old_flag_names_still_work() -> None:
    built = build_settings(
        Settings, ["--http", "off", "--registry", "http://r:9000"], prog="natroute-beacon"
    )
    assert (built.settings.http_listen, built.settings.registry_url) == ("", "http://r:9000")
    assert built.deprecated == (("--http", "--http-listen"), ("--registry", "--registry-url"))


def test_env_is_read_and_flags_win() -> None:
    env = {
        "NATROUTE_BEACON_LISTEN": "127.0.0.1:9200",
        "NATROUTE_BEACON_PEERS": "a:1,b:2",
        "NATROUTE_BEACON_REGISTRY_URL": "http://reg:8000",
        "NATROUTE_BEACON_REGISTRY_TOKEN": "secret",
        "NATROUTE_BEACON_STRICT": "false",
        "NATROUTE_BEACON_BEACON_ID": "9",
        "NATROUTE_BEACON_GOSSIP_INTERVAL": "5",
    }
    got = _child_settings(env)
    assert got["listen"] == "127.0.0.1:9200"
    assert got["peers"] == ["a:1", "b:2"]
    assert got["registry_url"] == "http://reg:8000"
    assert got["strict"] is False
    assert got["beacon_id"] == 9
    assert got["gossip_interval"] == 5.0
    got = _child_settings(env, "--listen", "127.0.0.1:9300", "--strict", "--beacon-id", "10")
    assert got["listen"] == "127.0.0.1:9300"
    assert got["strict"] is True
    assert got["beacon_id"] == 10
    assert got["peers"] == ["a:1", "b:2"]


def test_defaults() -> None:
    settings = Settings()
    assert settings.listen == "0.0.0.0:9001"
    assert settings.http_listen == "0.0.0.0:8001"
    assert settings.strict is True
    assert settings.node_ttl == 600.0
    assert settings.sweep_interval == 60.0
    assert settings.gossip_interval == 10.0
    assert settings.register_interval == 30.0
    assert settings.node_cap == 500_000


@pytest.mark.parametrize(
    "fields",
    [
        {"listen": "nohost"},
        {"listen": ":9001"},
        {"http_listen": "x:y"},
        {"peers": "a:1,b"},
        {"advertise": "1.2.3.4"},
        {"registry_url": "registry:8000"},
        {"beacon_id": -1},
        {"beacon_id": 2**32},
        {"log_level": "loud"},
        {"node_ttl": 0},
    ],
)
def test_invalid_values_are_rejected(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings(**fields)  # type: ignore[arg-type]


def test_empty_optional_values_mean_unset() -> None:
    settings = Settings(advertise="", registry_url="", peers=["x:1"])
    assert settings.advertise is None
    assert settings.registry_url is None
    assert settings.peers == ("x:1",)


def test_derive_beacon_id_is_stable_and_non_zero() -> None:
    assert derive_beacon_id("203.0.113.1:9001") == derive_beacon_id("203.0.113.1:9001")
    assert derive_beacon_id("a") != derive_beacon_id("b")
    assert derive_beacon_id("") == 0x811C9DC5
    assert all(0 < derive_beacon_id(str(i)) <= 0xFFFFFFFF for i in range(100))
