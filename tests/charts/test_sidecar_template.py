"""natroute as a dependency of a tunnel chart, and its sidecar templates used from there.

The parent chart is written into ``tmp_path`` with natroute as a ``file://``
dependency (``helm dependency update`` through helm-python-sdk, offline), an
appVersion of its own (9.9.9) and a ``.Values.securityContext`` of its own that
adds NET_ADMIN: none of them may leak into the sidecar. Its Deployment includes
``natroute.sidecar.container`` and ``natroute.sidecar.volumes`` with the
parent's root context, as tunnel charts do.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from .chart import CHART_DIR, Manifest, container, env_of, find

_PARENT_CHART = """\
apiVersion: v2
name: tunnelapp
version: 1.0.0
appVersion: "9.9.9"
dependencies:
  - name: natroute
    version: 0.1.0
    repository: file://{chart}
{alias}"""

# The parent's own restricted-looking context that adds a capability: the tunnel
# container may need it, natroute's sidecar must not get it.
_PARENT_VALUES = """\
securityContext:
  runAsUser: 0
  capabilities:
    add: [NET_ADMIN]
sidecar: {}
"""

_PARENT_DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-app
spec:
  replicas: 1
  selector:
    matchLabels:
      app: tunnelapp
  template:
    metadata:
      labels:
        app: tunnelapp
        natroute.io/node: "true"
    spec:
      {{- $sidecar := .Values.sidecar | default (index .Values "SUBCHART").sidecar }}
      {{- $natroute := dict "root" $ "sidecar" $sidecar }}
      containers:
        - name: app
          image: "example/tunnel:{{ .Chart.AppVersion }}"
          securityContext:
            {{- toYaml .Values.securityContext | nindent 12 }}
        {{- include "natroute.sidecar.container" $natroute | trim | nindent 8 }}
      volumes:
        {{- include "natroute.sidecar.volumes" $natroute | trim | nindent 8 }}
"""

_SIDECAR: dict[str, Any] = {
    "image": {"repository": "natroute/sidecar", "tag": "0.1.0"},
    "port": 4500,
    "adminPort": 8500,
    "adminToken": {"existingSecret": "app-natroute", "existingSecretKey": "token"},
    "identity": {"claimTemplate": True},
    "config": {
        "registryUrl": "http://registry.natroute.svc:9000",
        "beacons": "beacon.example.net:9001",
        "logLevel": "debug",
    },
}


def _parent(tmp_path: Path, alias: str = "") -> Path:
    root = tmp_path / "tunnelapp"
    (root / "templates").mkdir(parents=True)
    extra = f"    alias: {alias}\n" if alias else ""
    (root / "Chart.yaml").write_text(_PARENT_CHART.format(chart=CHART_DIR, alias=extra))
    (root / "values.yaml").write_text(_PARENT_VALUES)
    deployment = _PARENT_DEPLOYMENT.replace("SUBCHART", alias or "natroute")
    (root / "templates" / "deployment.yaml").write_text(deployment)
    helm.dependency_update(root)  # packages charts/natroute into charts/, offline
    assert [p.name for p in (root / "charts").iterdir()] == ["natroute-0.1.0.tgz"]
    return root


@pytest.fixture(scope="module")
def parent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tunnel chart with natroute as a file:// dependency."""
    return _parent(tmp_path_factory.mktemp("parent"))


def _render(root: Path, values: dict[str, Any]) -> dict[str, list[Manifest]]:
    """Rendered objects by template path."""
    with helm.Chart.load(root) as chart:
        out = chart.render(values, name="app", namespace="apps")
    return {
        path: [doc for doc in yaml.safe_load_all(text) if doc]
        for path, text in out.items()
        if path.endswith(".yaml")
    }


def _deployment(rendered: dict[str, list[Manifest]]) -> Manifest:
    (doc,) = rendered["tunnelapp/templates/deployment.yaml"]
    return doc


def _sidecar(rendered: dict[str, list[Manifest]]) -> dict[str, Any]:
    return container(_deployment(rendered)["spec"]["template"]["spec"], "natroute-sidecar")


def _natroute_objects(rendered: dict[str, list[Manifest]]) -> list[Manifest]:
    return [doc for path, docs in rendered.items() if "/charts/" in path for doc in docs]


def test_the_sidecar_is_natroutes_whoever_includes_it(parent: Path) -> None:
    rendered = _render(parent, {})
    spec = _deployment(rendered)["spec"]["template"]["spec"]
    assert container(spec, "app")["image"] == "example/tunnel:9.9.9"
    sidecar = container(spec, "natroute-sidecar")
    # natroute's image: its own appVersion, not the parent's 9.9.9
    assert sidecar["image"] == "natroute/sidecar:0.1.0"
    # natroute's restricted profile, not the parent's securityContext (root, NET_ADMIN)
    assert sidecar["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    # The defaults point at the natroute release's own objects.
    env = env_of(sidecar)
    objects = _natroute_objects(rendered)
    registry = find(objects, "Service", "app-natroute-registry")
    assert env["NATROUTE_SIDECAR_REGISTRY_URL"] == (
        f"http://{registry['metadata']['name']}.apps.svc.cluster.local:9000"
    )
    headless = "app-natroute-beacon-headless.apps.svc.cluster.local"
    assert env["NATROUTE_SIDECAR_BEACONS"] == (
        f"app-natroute-beacon-0.{headless}:9001,app-natroute-beacon-1.{headless}:9001"
    )
    ref = env["NATROUTE_SIDECAR_ADMIN_TOKEN"]["secretKeyRef"]
    secret = find(objects, "Secret", ref["name"])
    assert ref["key"] in secret["data"]
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert sidecar[kind]["httpGet"]["port"] == "natroute-admin"


def test_an_alias_changes_nothing(tmp_path: Path) -> None:
    rendered = _render(_parent(tmp_path, alias="overlay"), {})
    sidecar = _sidecar(rendered)
    assert sidecar["image"] == "natroute/sidecar:0.1.0"
    assert sidecar["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    # The alias names the release's objects; the sidecar follows them.
    objects = _natroute_objects(rendered)
    name = env_of(sidecar)["NATROUTE_SIDECAR_ADMIN_TOKEN"]["secretKeyRef"]["name"]
    assert name == "app-overlay-sidecar"
    find(objects, "Secret", name)
    url = env_of(sidecar)["NATROUTE_SIDECAR_REGISTRY_URL"]
    find(objects, "Service", url.removeprefix("http://").split(".")[0])
    images = {
        c["image"]
        for d in objects
        if d["kind"] == "StatefulSet"
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert images == {"natroute/registry:0.1.0", "natroute/beacon:0.1.0"}


def test_disabling_registry_and_beacons_removes_all_their_objects(parent: Path) -> None:
    full = _natroute_objects(_render(parent, {}))
    assert {"registry", "beacon", "test"} <= {
        d["metadata"]["labels"].get("app.kubernetes.io/component") for d in full
    }
    values: dict[str, Any] = {
        "natroute": {
            "registry": {"enabled": False},
            "beacon": {"enabled": False},
            "sidecar": {"config": {"registryUrl": "https://registry.example.net"}},
        }
    }
    rendered = _render(parent, values)
    left = {(d["kind"], d["metadata"]["name"]) for d in _natroute_objects(rendered)}
    assert left == {("Secret", "app-natroute-sidecar")}  # the sidecar's admin token
    env = env_of(_sidecar(rendered))
    assert env["NATROUTE_SIDECAR_REGISTRY_URL"] == "https://registry.example.net"
    assert "NATROUTE_SIDECAR_BEACONS" not in env  # the registry's beacon list
    del values["natroute"]["sidecar"]
    with pytest.raises(helm.HelmRenderError, match=r"set sidecar\.config\.registryUrl"):
        _render(parent, values)


def test_a_parent_can_pass_its_own_sidecar_values(parent: Path) -> None:
    spec = _deployment(_render(parent, {"sidecar": _SIDECAR}))["spec"]["template"]["spec"]
    assert [c["name"] for c in spec["containers"]] == ["app", "natroute-sidecar"]
    sidecar = container(spec, "natroute-sidecar")
    env = env_of(sidecar)
    assert env["NATROUTE_SIDECAR_REGISTRY_URL"] == "http://registry.natroute.svc:9000"
    assert env["NATROUTE_SIDECAR_BEACONS"] == "beacon.example.net:9001"
    assert env["NATROUTE_SIDECAR_LISTEN"] == "0.0.0.0:4500"
    assert env["NATROUTE_SIDECAR_HTTP_LISTEN"] == "0.0.0.0:8500"
    assert env["NATROUTE_SIDECAR_LOG_LEVEL"] == "debug"
    assert env["NATROUTE_SIDECAR_ADMIN_TOKEN"] == {
        "secretKeyRef": {"name": "app-natroute", "key": "token"}
    }
    assert sidecar["image"] == "natroute/sidecar:0.1.0"
    assert sidecar["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    # Without probe values the built-in timings apply (5 minutes to start).
    assert sidecar["startupProbe"]["failureThreshold"] == 60
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "natroute-admin"}
    # claimTemplate: the identity volume comes from the parent's StatefulSet.
    assert [v["name"] for v in spec["volumes"]] == ["natroute-tmp"]
    # An image tag left empty is natroute's appVersion, never the parent's.
    untagged = _SIDECAR | {"image": {"repository": "natroute/sidecar"}}
    assert _sidecar(_render(parent, {"sidecar": untagged}))["image"] == "natroute/sidecar:0.1.0"


def test_the_written_app_version_is_the_charts() -> None:
    # natroute.appVersion falls back to a written version when no natroute
    # context is found; it must be Chart.yaml's.
    helpers = (CHART_DIR / "templates" / "_helpers.tpl").read_text()
    written = re.search(r"AppVersion \}\}\{\{ else \}\}([^{]+)\{\{ end \}\}", helpers)
    assert written is not None
    chart = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    assert written[1] == chart["appVersion"]
