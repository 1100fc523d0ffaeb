"""Parts switched on and off, probes and extras from values, the ``helm test`` Pod."""

from __future__ import annotations

from typing import Any

from .chart import RELEASE, Manifest, container, env_of, find, pod_spec, render

FULL = f"{RELEASE}-natroute"
HEADLESS = f"{FULL}-beacon-headless.natroute.svc.cluster.local"


def _names(manifests: list[Manifest]) -> set[tuple[str, str]]:
    return {(d["kind"], d["metadata"]["name"]) for d in manifests}


def _component(doc: Manifest) -> str | None:
    labels: dict[str, str] = doc["metadata"].get("labels", {})
    return labels.get("app.kubernetes.io/component")


def test_registry_and_beacons_can_be_left_out(rendered: dict[str, list[Manifest]]) -> None:
    manifests = rendered["sidecar-only"]
    assert not [d for d in manifests if _component(d) in {"registry", "beacon", "test"}]
    assert _names(manifests) == {
        ("Secret", f"{FULL}-sidecar"),
        ("ServiceAccount", FULL),
        ("ConfigMap", f"{FULL}-tunnel"),
        ("Deployment", f"{FULL}-tunnel"),
        ("NetworkPolicy", f"{FULL}-tunnel"),
    }
    sidecar = container(pod_spec(manifests, "Deployment", f"{FULL}-tunnel"), "natroute-sidecar")
    env = env_of(sidecar)
    assert env["NATROUTE_SIDECAR_REGISTRY_URL"] == "http://registry.natroute.svc:9000"
    assert "NATROUTE_SIDECAR_BEACONS" not in env  # the registry's list
    egress = find(manifests, "NetworkPolicy", f"{FULL}-tunnel")["spec"]["egress"]
    assert all("to" not in rule for rule in egress)  # no rule names the absent registry


def test_each_part_alone() -> None:
    beacons_only = render({"registry": {"enabled": False}})
    assert not [d for d in beacons_only if _component(d) == "registry"]
    env = env_of(container(pod_spec(beacons_only, "StatefulSet", f"{FULL}-beacon"), "beacon"))
    assert "NATROUTE_BEACON_REGISTRY_URL" not in env
    assert "NATROUTE_BEACON_REGISTRY_TOKEN" not in env
    policy = find(beacons_only, "NetworkPolicy", f"{FULL}-beacon")["spec"]
    assert all("to" not in rule for rule in policy["egress"])
    test = find(beacons_only, "Pod", f"{FULL}-test-readyz")
    assert env_of(test["spec"]["containers"][0])["READYZ_URLS"] == (
        f"http://{FULL}-beacon-0.{HEADLESS}:8001/readyz"
    )
    registry_only = render({"beacon": {"enabled": False}})
    assert not [d for d in registry_only if _component(d) == "beacon"]
    policy = find(registry_only, "NetworkPolicy", f"{FULL}-registry")["spec"]
    selected = [
        source.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component")
        for source in policy["ingress"][0]["from"]
    ]
    assert selected == ["tunnel", "test", None]
    nothing = render(
        {
            "registry": {"enabled": False},
            "beacon": {"enabled": False},
            "metrics": {"serviceMonitor": {"enabled": True}},
        }
    )
    assert _names(nothing) == {("Secret", f"{FULL}-sidecar")}


def _probe(item: dict[str, Any], kind: str) -> dict[str, Any]:
    probe: dict[str, Any] = item[kind]
    return probe


def test_probes_and_extras_follow_values(rendered: dict[str, list[Manifest]]) -> None:
    manifests = rendered["tls-and-extras"]
    spec = pod_spec(manifests, "StatefulSet", f"{FULL}-beacon")
    beacon = container(spec, "beacon")
    # TLS: the probes speak HTTPS; startupProbe is switched off; liveness has its timing.
    assert "startupProbe" not in beacon
    assert _probe(beacon, "livenessProbe") == {
        "httpGet": {"path": "/healthz", "port": "http", "scheme": "HTTPS"},
        "periodSeconds": 30,
        "timeoutSeconds": 5,
        "failureThreshold": 3,
    }
    assert _probe(beacon, "readinessProbe")["httpGet"]["scheme"] == "HTTPS"
    env = env_of(beacon)
    assert env["NATROUTE_BEACON_TLS_CERT"] == "/etc/natroute/tls/tls.crt"
    assert env["NATROUTE_BEACON_LOG_FORMAT"] == "text"  # extraEnv
    assert env["BEACON_STREAM_LIST"] == (
        "wss://b0.example.net/v1/relay wss://b1.example.net:8443/v1/relay"
    )
    assert {"name": "tls", "mountPath": "/etc/natroute/tls", "readOnly": True} in beacon[
        "volumeMounts"
    ]
    assert {"name": "tls", "secret": {"secretName": "beacon-tls"}} in spec["volumes"]

    registry = container(pod_spec(manifests, "StatefulSet", f"{FULL}-registry"), "registry")
    assert _probe(registry, "readinessProbe") == {
        "httpGet": {"path": "/readyz", "port": "http"},
        "periodSeconds": 5,
        "timeoutSeconds": 3,
        "failureThreshold": 3,
        "successThreshold": 2,
    }
    assert registry["env"][-1] == {
        "name": "NATROUTE_REGISTRY_SIGNATURE_SKEW",
        "valueFrom": {"configMapKeyRef": {"name": "ops", "key": "skew"}},
    }
    assert {"name": "extra", "mountPath": "/srv/extra"} in registry["volumeMounts"]

    tunnel = pod_spec(manifests, "Deployment", f"{FULL}-tunnel")
    sidecar = container(tunnel, "natroute-sidecar")
    assert "livenessProbe" not in sidecar
    assert _probe(sidecar, "startupProbe") == {
        "httpGet": {"path": "/healthz", "port": "natroute-admin"},
        "periodSeconds": 5,
        "failureThreshold": 60,
    }
    assert env_of(sidecar)["NATROUTE_SIDECAR_LOG_FORMAT"] == "text"
    assert {"name": "ca", "mountPath": "/etc/natroute/ca"} in sidecar["volumeMounts"]
    assert {"name": "ca", "configMap": {"name": "beacon-ca"}} in tunnel["volumes"]


def test_stream_urls_follow_the_advertised_addresses() -> None:
    manifests = render(
        {
            "beacon": {
                "advertise": ["203.0.113.10:9001", "[2001:db8::11]:9001"],
                "service": {"httpPort": 443},
                "config": {"tlsCert": "/tls/c.pem", "tlsKey": "/tls/k.pem"},
            }
        }
    )
    env = env_of(container(pod_spec(manifests, "StatefulSet", f"{FULL}-beacon"), "beacon"))
    assert env["BEACON_STREAM_LIST"] == (
        "wss://203.0.113.10:443/v1/relay wss://[2001:db8::11]:443/v1/relay"
    )
    svc = find(manifests, "Service", f"{FULL}-beacon-1")
    assert svc["spec"]["ports"][1] == {
        "name": "http",
        "port": 443,
        "targetPort": "http",
        "protocol": "TCP",
    }
    # Without public addresses each beacon derives its own (pod DNS name, port 8001).
    env = env_of(container(pod_spec(render({}), "StatefulSet", f"{FULL}-beacon"), "beacon"))
    assert "BEACON_STREAM_LIST" not in env
    closed = render({"beacon": {"service": {"httpPort": 0}}})
    assert len(find(closed, "Service", f"{FULL}-beacon-0")["spec"]["ports"]) == 1


def test_helm_test_checks_both_readyz_with_the_restricted_profile(
    rendered: dict[str, list[Manifest]],
) -> None:
    pod = find(rendered["defaults"], "Pod", f"{FULL}-test-readyz")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Never"
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    (item,) = spec["containers"]
    assert item["image"] == "natroute/sidecar:0.1.0"
    ctx = item["securityContext"]
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert env_of(item)["READYZ_URLS"] == (
        f"http://{FULL}-registry.natroute.svc.cluster.local:9000/readyz "
        f"http://{FULL}-beacon-0.{HEADLESS}:8001/readyz"
    )
    tls = find(rendered["tls-and-extras"], "Pod", f"{FULL}-test-readyz")
    assert f"https://{FULL}-beacon-0." in env_of(tls["spec"]["containers"][0])["READYZ_URLS"]
    assert not [d for d in render({"test": {"enabled": False}}) if d["kind"] == "Pod"]
