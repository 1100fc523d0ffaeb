"""The sidecar's named templates used from another chart, as tunnel charts would.

A parent chart with natroute in its ``charts/`` directory includes
``natroute.sidecar.container`` and ``natroute.sidecar.volumes`` in its own
Deployment, with its own values.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from .chart import CHART_DIR, container, env_of

_PARENT_CHART = """\
apiVersion: v2
name: tunnelapp
version: 1.0.0
appVersion: "9.9.9"
dependencies:
  - name: natroute
    version: 0.1.0
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
      {{- $natroute := dict "root" $ "sidecar" .Values.sidecar }}
      containers:
        - name: app
          image: example/tunnel:1
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


@pytest.fixture
def parent(tmp_path: Path) -> Path:
    """A tunnel chart with natroute as a dependency."""
    root = tmp_path / "tunnelapp"
    (root / "templates").mkdir(parents=True)
    (root / "Chart.yaml").write_text(_PARENT_CHART)
    (root / "values.yaml").write_text("sidecar: {}\n")
    (root / "templates" / "deployment.yaml").write_text(_PARENT_DEPLOYMENT)
    shutil.copytree(CHART_DIR, root / "charts" / "natroute")
    return root


def _render_parent(root: Path, sidecar: dict[str, Any]) -> dict[str, Any]:
    with helm.Chart.load(root) as chart:
        out = chart.render({"sidecar": sidecar}, name="app", namespace="apps")
    doc: dict[str, Any] = yaml.safe_load(out["tunnelapp/templates/deployment.yaml"])
    return doc


def test_another_chart_adds_the_sidecar_to_its_pod(parent: Path) -> None:
    spec = _render_parent(parent, _SIDECAR)["spec"]["template"]["spec"]
    assert [c["name"] for c in spec["containers"]] == ["app", "natroute-sidecar"]
    sidecar = container(spec, "natroute-sidecar")
    env = env_of(sidecar)
    assert env["NATROUTE_SIDECAR_REGISTRY_URL"] == "http://registry.natroute.svc:9000"
    assert env["NATROUTE_SIDECAR_BEACONS"] == "beacon.example.net:9001"
    assert env["NATROUTE_SIDECAR_LISTEN"] == "0.0.0.0:4500"
    assert env["NATROUTE_SIDECAR_ADMIN_LISTEN"] == "0.0.0.0:8500"
    assert env["NATROUTE_SIDECAR_LOG_LEVEL"] == "debug"
    assert env["NATROUTE_SIDECAR_ADMIN_TOKEN"] == {
        "secretKeyRef": {"name": "app-natroute", "key": "token"}
    }
    assert sidecar["image"] == "natroute/sidecar:0.1.0"
    # The parent has no securityContext value: the restricted default applies.
    ctx = sidecar["securityContext"]
    assert ctx["runAsNonRoot"] is True
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "natroute-admin"}
    # claimTemplate: the identity volume comes from the parent's StatefulSet.
    assert [v["name"] for v in spec["volumes"]] == ["natroute-tmp"]


def test_without_registry_and_beacons_the_template_says_what_to_set(parent: Path) -> None:
    sidecar = {k: v for k, v in _SIDECAR.items() if k != "config"}
    with pytest.raises(helm.HelmRenderError, match=r"set sidecar\.config\.registryUrl"):
        _render_parent(parent, sidecar)
