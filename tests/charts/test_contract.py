"""The chart against the services and images it runs.

* every service setting has a values key, and the env names the chart renders
  are exactly the pydantic-settings names (``NATROUTE_<SERVICE>_<FIELD>``);
* the rendered env builds each service's ``Settings`` without error;
* the beacon's start-up script picks per-replica peers, address and ID;
* the images and user the chart expects are the ones docker/Dockerfile builds;
* compose.yaml configures the services with env names the chart also uses.
"""

from __future__ import annotations

import base64
import json
import os
import re
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

from natroute.beacon.settings import Settings as BeaconSettings
from natroute.registry.settings import Settings as RegistrySettings
from natroute.sidecar.settings import Settings as SidecarSettings

from .chart import (
    CHART_DIR,
    VALUE_SETS,
    Manifest,
    camel_to_snake,
    container,
    env_of,
    find,
    pod_spec,
)

REPO = CHART_DIR.parents[1]

#: Settings the chart sets itself (wiring, secrets, paths), not through `config`;
#: ``config`` (a settings file) is not used: the chart passes every setting as env.
_MANAGED = {
    "registry": {"http_listen", "db", "database_url", "token", "dev", "port_file", "config"},
    "beacon": {
        "listen",
        "http_listen",
        "beacon_id",
        "peers",
        "registry_url",
        "registry_token",
        "advertise",
        "advertise_stream",
        "config",
    },
    "sidecar": {"listen", "http_listen", "admin_token", "identity", "config"},
}
_SETTINGS: dict[str, type[BaseSettings]] = {
    "registry": RegistrySettings,
    "beacon": BeaconSettings,
    "sidecar": SidecarSettings,
}
_PREFIX = {name: f"NATROUTE_{name.upper()}_" for name in _SETTINGS}


def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((CHART_DIR / "values.schema.json").read_text())
    return schema


@pytest.mark.parametrize("component", sorted(_SETTINGS))
def test_every_setting_has_a_values_key(component: str) -> None:
    keys = _schema()["properties"][component]["properties"]["config"]["properties"]
    fields = set(_SETTINGS[component].model_fields)
    configurable = {camel_to_snake(k) for k in keys}
    assert configurable | _MANAGED[component] == fields
    assert not configurable & _MANAGED[component]


def _resolve(env: dict[str, Any], secrets: dict[tuple[str, str], str]) -> dict[str, str]:
    """The env a container would see: secret refs read, $(VAR) expanded, fieldRefs faked."""
    fields = {"status.podIP": "10.244.1.7", "metadata.name": "nr-beacon-1"}
    out: dict[str, str] = {}
    for name, value in env.items():
        if isinstance(value, str):
            out[name] = re.sub(r"\$\((\w+)\)", lambda m: out.get(m[1], m[0]), value)
        elif "secretKeyRef" in value:
            ref = value["secretKeyRef"]
            out[name] = secrets[(ref["name"], ref["key"])]
        else:
            out[name] = fields[value["fieldRef"]["fieldPath"]]
    return out


def _secrets(manifests: list[Manifest]) -> dict[tuple[str, str], str]:
    return {
        (d["metadata"]["name"], key): base64.b64decode(data).decode()
        for d in manifests
        if d["kind"] == "Secret"
        for key, data in d["data"].items()
    }


def _settings(component: str, env: dict[str, str]) -> BaseSettings:
    prefix = _PREFIX[component]
    names = {n for n in env if n.startswith(prefix)}
    fields = {n.removeprefix(prefix).lower() for n in names}
    assert fields <= set(_SETTINGS[component].model_fields), fields
    assert all(n == n.upper() for n in names)
    kwargs = {n.removeprefix(prefix).lower(): v for n, v in env.items() if n in names}
    # model_validate: the values exactly as the pod's env carries them, and
    # nothing from this process's own environment.
    return _SETTINGS[component].model_validate(kwargs)


_WORKLOAD = {
    "registry": ("StatefulSet", "registry", "registry"),
    "beacon": ("StatefulSet", "beacon", "beacon"),
    "sidecar": ("Deployment", "tunnel", "natroute-sidecar"),
}


@pytest.mark.parametrize("component", sorted(_SETTINGS))
@pytest.mark.parametrize("value_set", ["tunnel", "nodeport", "everything-set"])
def test_rendered_env_builds_the_service_settings(
    rendered: dict[str, list[Manifest]], component: str, value_set: str
) -> None:
    manifests = rendered[value_set]
    kind, suffix, name = _WORKLOAD[component]
    prefix = VALUE_SETS[value_set].get("fullnameOverride", "demo-natroute")
    env = _resolve(
        env_of(container(pod_spec(manifests, kind, f"{prefix}-{suffix}"), name)),
        _secrets(manifests) | {("ops-registry", "op"): "x" * 20},
    )
    settings = _settings(component, env)
    if value_set != "everything-set":
        return
    values = VALUE_SETS[value_set][component]["config"]
    dumped = settings.model_dump()
    for key, value in values.items():
        field = camel_to_snake(key)
        expected = (
            value.rstrip("/") if isinstance(value, str) and field == "registry_url" else value
        )
        got = dumped[field]
        got = got.get_secret_value() if hasattr(got, "get_secret_value") else got
        assert got == expected or str(got) == str(expected), (field, got, expected)


def test_registry_on_postgres_builds_its_settings(rendered: dict[str, list[Manifest]]) -> None:
    manifests = rendered["postgres"]
    env = _resolve(
        env_of(container(pod_spec(manifests, "Deployment", "demo-natroute-registry"), "registry")),
        _secrets(manifests),
    )
    settings = _settings("registry", env)
    assert isinstance(settings, RegistrySettings)
    assert settings.postgres_url() == (
        "postgresql://natroute:db-password-0123@pg.example.net:5432/registry"
    )
    assert "NATROUTE_REGISTRY_DB" not in env


def test_registry_accepts_the_generated_token(rendered: dict[str, list[Manifest]]) -> None:
    manifests = rendered["defaults"]
    env = _resolve(
        env_of(container(pod_spec(manifests, "StatefulSet", "demo-natroute-registry"), "registry")),
        _secrets(manifests),
    )
    settings = _settings("registry", env)
    assert isinstance(settings, RegistrySettings)
    assert len(settings.operator_token()) == 40
    assert str(settings.db) == "/var/lib/natroute/registry.db"


# --- the beacon's per-replica start-up script ----------------------------------------


def _run_beacon_script(
    manifests: list[Manifest], pod: str, tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    beacon = container(pod_spec(manifests, "StatefulSet", "demo-natroute-beacon"), "beacon")
    assert beacon["args"][:2] == ["sh", "-c"]
    fake = tmp_path / "natroute-beacon"
    fake.write_text("#!/bin/sh\nenv | grep '^NATROUTE_BEACON_' | sort\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    env = _resolve(
        env_of(beacon) | {"POD_NAME": pod}, {("demo-natroute-registry", "token"): "t" * 20}
    )
    env = {k: v for k, v in env.items() if not k.startswith("NATROUTE_BEACON_REGISTRY_TOKEN")}
    env["PATH"] = f"{tmp_path}{os.pathsep}/usr/bin:/bin"
    return subprocess.run(
        beacon["args"], env=env, capture_output=True, text=True, timeout=10, check=False
    )


def _script_env(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    assert result.returncode == 0, result.stderr
    return dict(line.split("=", 1) for line in result.stdout.splitlines())


def test_beacon_script_drops_itself_from_peers(
    rendered: dict[str, list[Manifest]], tmp_path: Path
) -> None:
    env = _script_env(_run_beacon_script(rendered["defaults"], "demo-natroute-beacon-1", tmp_path))
    headless = "demo-natroute-beacon-headless.natroute.svc.cluster.local"
    assert env["NATROUTE_BEACON_PEERS"] == f"demo-natroute-beacon-0.{headless}:9001"
    assert env["NATROUTE_BEACON_ADVERTISE"] == f"demo-natroute-beacon-1.{headless}:9001"
    assert "NATROUTE_BEACON_BEACON_ID" not in env
    settings = BeaconSettings.model_validate(
        {k.removeprefix("NATROUTE_BEACON_").lower(): v for k, v in env.items()}
    )
    assert settings.peers == (f"demo-natroute-beacon-0.{headless}:9001",)


def test_beacon_script_picks_address_and_id_per_replica(
    rendered: dict[str, list[Manifest]], tmp_path: Path
) -> None:
    manifests = rendered["nodeport"]
    env = _script_env(_run_beacon_script(manifests, "demo-natroute-beacon-2", tmp_path))
    assert env["NATROUTE_BEACON_ADVERTISE"] == "[2001:db8::12]:30903"
    assert env["NATROUTE_BEACON_BEACON_ID"] == "102"
    assert env["NATROUTE_BEACON_PEERS"].count(",") == 1
    assert "demo-natroute-beacon-2." not in env["NATROUTE_BEACON_PEERS"]
    first = _script_env(_run_beacon_script(manifests, "demo-natroute-beacon-0", tmp_path))
    assert first["NATROUTE_BEACON_ADVERTISE"] == "203.0.113.10:30901"
    assert first["NATROUTE_BEACON_BEACON_ID"] == "100"


def test_beacon_script_refuses_a_replica_without_address(
    rendered: dict[str, list[Manifest]], tmp_path: Path
) -> None:
    result = _run_beacon_script(rendered["nodeport"], "demo-natroute-beacon-3", tmp_path)
    assert result.returncode == 1
    assert "no advertised address for replica 3" in result.stderr
    assert result.stdout == ""


# --- images ---------------------------------------------------------------------------


def test_images_are_the_dockerfile_targets(rendered: dict[str, list[Manifest]]) -> None:
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    targets = set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", dockerfile, re.MULTILINE | re.IGNORECASE))
    images = {
        c["image"]
        for d in rendered["tunnel"]
        if d["kind"] in {"StatefulSet", "Deployment"}
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    repos = {image.rsplit(":", 1)[0] for image in images}
    assert repos == {"natroute/registry", "natroute/beacon", "natroute/sidecar"}
    assert {r.removeprefix("natroute/") for r in repos} <= targets
    # The chart's commands are the ones those targets run.
    for target, command in (
        ("beacon", "natroute-beacon"),
        ("registry", "natroute-registry"),
        ("sidecar", "natroute-sidecar"),
    ):
        block = dockerfile.split(f"AS {target}", 1)[1].split("FROM", 1)[0]
        assert command in block
    # The runtime user the pods run as.
    assert "--uid 10001" in dockerfile
    sts = find(rendered["defaults"], "StatefulSet", "demo-natroute-registry")
    assert sts["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 10001
    assert "--home-dir /var/lib/natroute" in dockerfile


# --- compose uses the same env names -----------------------------------------------------

#: Settings compose may use that the chart never sets: dev mode (a weak, well-known token).
_COMPOSE_ONLY = {"NATROUTE_REGISTRY_DEV"}


def _compose_env_names() -> set[str]:
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    names: set[str] = set()
    for service in compose["services"].values():
        env = service.get("environment", {})
        items = env if isinstance(env, list) else list(env)
        names.update(str(item).split("=", 1)[0] for item in items)
    return {n for n in names if re.match(r"NATROUTE_(REGISTRY|BEACON|SIDECAR)_", n)}


def test_compose_env_names_are_the_charts(rendered: dict[str, list[Manifest]]) -> None:
    chart_names = {
        e["name"]
        for manifests in rendered.values()
        for doc in manifests
        if doc["kind"] in {"StatefulSet", "Deployment"}
        for c in doc["spec"]["template"]["spec"]["containers"]
        for e in c.get("env", [])
    }
    compose_names = _compose_env_names()
    assert compose_names  # compose configures the services through these names
    assert compose_names - _COMPOSE_ONLY <= chart_names
    for name in _COMPOSE_ONLY:
        component = name.split("_")[1].lower()
        assert name.removeprefix(_PREFIX[component]).lower() in _SETTINGS[component].model_fields
