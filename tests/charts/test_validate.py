"""Every rendered object against the Kubernetes OpenAPI schemas, strictly.

kubernetes-validate's strict schemas reject unknown fields and wrong types, for
each minor version from 1.30 through the newest one it bundles. The Prometheus
Operator's kinds have no schema there and get a structural check instead.
"""

from __future__ import annotations

import json
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest

from .chart import Manifest
from .test_lint import KUBE_VERSIONS

_CRD_KINDS = frozenset({"ServiceMonitor", "PodMonitor"})


def _unique(rendered: dict[str, list[Manifest]]) -> list[Manifest]:
    """Every distinct rendered object (value sets repeat most of them)."""
    seen: dict[str, Manifest] = {}
    for manifests in rendered.values():
        for doc in manifests:
            seen.setdefault(json.dumps(doc, sort_keys=True), doc)
    return list(seen.values())


@pytest.mark.parametrize("kube", KUBE_VERSIONS)
def test_every_object_validates_strictly(rendered: dict[str, list[Manifest]], kube: str) -> None:
    checked = 0
    for doc in _unique(rendered):
        if doc["kind"] in _CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, kube, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            pytest.fail(
                f"{doc['kind']}/{doc['metadata']['name']} on {kube}: {where}: {exc.message}"
            )
        checked += 1
    assert checked >= 20


def test_strict_validation_catches_an_unknown_field(rendered: dict[str, list[Manifest]]) -> None:
    # The check above can fail: a typo'd field is refused.
    doc: dict[str, Any] = json.loads(json.dumps(rendered["defaults"][0]))
    doc["spec" if "spec" in doc else "metadata"]["bogusField"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, KUBE_VERSIONS[0], strict=True)


def test_monitors_are_well_formed(rendered: dict[str, list[Manifest]]) -> None:
    monitors = [d for d in rendered["servicemonitor"] if d["kind"] in _CRD_KINDS]
    assert sorted(d["kind"] for d in monitors) == ["PodMonitor", "ServiceMonitor"]
    for doc in monitors:
        assert doc["apiVersion"] == "monitoring.coreos.com/v1"
        assert set(doc["spec"]) == {"selector", "namespaceSelector", endpoints_key(doc)}
        assert doc["spec"]["selector"]["matchLabels"]
        for endpoint in doc["spec"][endpoints_key(doc)]:
            assert set(endpoint) == {"port", "path", "interval", "scrapeTimeout"}
            assert endpoint["path"] == "/metrics"


def endpoints_key(doc: Manifest) -> str:
    """Where a monitor lists its scrape endpoints."""
    return "endpoints" if doc["kind"] == "ServiceMonitor" else "podMetricsEndpoints"
