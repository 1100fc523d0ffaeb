"""Strict ``helm lint`` of the chart and its values.schema.json (Helm's own engine)."""

from __future__ import annotations

from typing import Any

import helm_python as helm
import pytest
from kubernetes_validate import utils as kv_utils  # type: ignore[import-untyped]

from .chart import CHART_DIR, RELEASE, VALUE_SETS, render

# Helm lint severities: 1 info, 2 warning, 3 error (strict turns warnings into errors).
_WARNING = 2
#: Kubernetes 1.30 through the newest minor version kubernetes-validate bundles.
KUBE_VERSIONS = sorted(
    {kv_utils.major_minor(v) for v in kv_utils.all_versions()},
    key=lambda v: tuple(int(p) for p in v.split(".")),
)
KUBE_VERSIONS = [v for v in KUBE_VERSIONS if tuple(int(p) for p in v.split(".")) >= (1, 30)]


def test_kube_versions_cover_1_30_to_the_newest() -> None:
    assert KUBE_VERSIONS[0] == "1.30"
    assert len(KUBE_VERSIONS) >= 2


@pytest.mark.parametrize("kube", KUBE_VERSIONS)
@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_strict_lint_is_clean(name: str, kube: str) -> None:
    report = helm.lint(CHART_DIR, VALUE_SETS[name], strict=True, kube_version=f"v{kube}.0")
    assert report["errors"] == []
    problems = [m for m in report["messages"] if m["severity"] >= _WARNING]
    assert problems == []
    assert report["total_charts_linted"] == 1


def test_release_name_is_valid() -> None:
    helm.validate_release_name(RELEASE)


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"beacon": {"replicas": "two"}}, "/beacon/replicas"),
        ({"registry": {"replicas": 2}}, "/registry/replicas"),
        ({"registry": {"database": {"url": "mysql://db/x"}}}, "/registry/database/url"),
        ({"registry": {"database": {"port": 0}}}, "/registry/database/port"),
        ({"registry": {"bogus": True}}, "bogus"),
        ({"sidecar": {"config": {"natDetect": "maybe"}}}, "/sidecar/config/natDetect"),
        ({"sidecar": {"config": {"adminToken": "x" * 20}}}, "adminToken"),
        ({"beacon": {"config": {"nodeTtl": -1}}}, "/beacon/config/nodeTtl"),
        ({"beacon": {"service": {"type": "ExternalName"}}}, "/beacon/service/type"),
        ({"beacon": {"advertise": ["no-port"]}}, "/beacon/advertise/0"),
        ({"registry": {"token": {"value": "changeme"}}}, "/registry/token/value"),
        ({"sidecar": {"adminToken": {"value": "short"}}}, "/sidecar/adminToken/value"),
        ({"registry": {"config": {"logLevel": "verbose"}}}, "/registry/config/logLevel"),
        ({"tunnel": {"enabled": "yes"}}, "/tunnel/enabled"),
    ],
)
def test_schema_rejects_a_bad_value(values: dict[str, Any], where: str) -> None:
    with helm.Chart.load(CHART_DIR) as chart, pytest.raises(helm.HelmValuesError) as info:
        chart.validate_schema(values)
    assert where in str(info.value)
    with pytest.raises(helm.HelmValuesError):
        render(values)


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_schema_accepts_every_value_set(name: str) -> None:
    with helm.Chart.load(CHART_DIR) as chart:
        chart.validate_schema(VALUE_SETS[name])


def test_advertise_list_must_match_the_replicas() -> None:
    with pytest.raises(helm.HelmRenderError, match=r"beacon\.advertise has 1 entries for 2"):
        render({"beacon": {"advertise": ["203.0.113.1:9001"]}})
