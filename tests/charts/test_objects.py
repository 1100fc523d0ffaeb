"""Assertions on the rendered objects: sidecar, registry, beacons, security, policies."""

from __future__ import annotations

import base64
import string
from typing import Any

import pytest

from .chart import (
    RELEASE,
    VALUE_SETS,
    Manifest,
    container,
    env_of,
    find,
    pod_spec,
    pod_specs,
    render,
    render_notes,
)

FULL = f"{RELEASE}-natroute"
REGISTRY_URL = f"http://{FULL}-registry.natroute.svc.cluster.local:9000"


def _probe(item: dict[str, Any], kind: str) -> tuple[str, Any]:
    get = item[kind]["httpGet"]
    return get["path"], get["port"]


# --- the sidecar in the example tunnel pod ---------------------------------------


def test_example_tunnel_is_off_by_default(rendered: dict[str, list[Manifest]]) -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for d in rendered["defaults"]}
    assert ("Deployment", f"{FULL}-tunnel") not in kinds
    assert not any(d["kind"] == "Deployment" for d in rendered["defaults"])


def test_tunnel_pod_has_the_sidecar_with_env_and_probes(
    rendered: dict[str, list[Manifest]],
) -> None:
    spec = pod_spec(rendered["tunnel"], "Deployment", f"{FULL}-tunnel")
    assert [c["name"] for c in spec["containers"]] == ["tunnel", "natroute-sidecar"]
    sidecar = container(spec, "natroute-sidecar")
    assert sidecar["image"] == "natroute/sidecar:0.1.0"
    assert sidecar["args"] == ["natroute-sidecar"]
    env = env_of(sidecar)
    beacons = ",".join(
        f"{FULL}-beacon-{i}.{FULL}-beacon-headless.natroute.svc.cluster.local:9001"
        for i in range(2)
    )
    assert env == {
        "POD_IP": {"fieldRef": {"fieldPath": "status.podIP"}},
        "NATROUTE_SIDECAR_LISTEN": "0.0.0.0:4000",
        "NATROUTE_SIDECAR_HTTP_LISTEN": "0.0.0.0:8080",
        "NATROUTE_SIDECAR_ADMIN_TOKEN": {
            "secretKeyRef": {"name": f"{FULL}-sidecar", "key": "admin-token"}
        },
        "NATROUTE_SIDECAR_IDENTITY": "/var/lib/natroute/identity.json",
        "NATROUTE_SIDECAR_REGISTRY_URL": REGISTRY_URL,
        "NATROUTE_SIDECAR_BEACONS": beacons,
        "NATROUTE_SIDECAR_LAN_ADDRS": "$(POD_IP):4000",
        "NATROUTE_SIDECAR_APP_DELIVER": "127.0.0.1:4101",
    }
    assert _probe(sidecar, "livenessProbe") == ("/healthz", "natroute-admin")
    assert _probe(sidecar, "readinessProbe") == ("/readyz", "natroute-admin")
    assert _probe(sidecar, "startupProbe") == ("/healthz", "natroute-admin")
    ports = {p["name"]: (p["containerPort"], p["protocol"]) for p in sidecar["ports"]}
    assert ports == {"natroute-udp": (4000, "UDP"), "natroute-admin": (8080, "TCP")}
    # identity.json, node.json and the beacon cache share one writable volume.
    mounts = {m["name"]: m["mountPath"] for m in sidecar["volumeMounts"]}
    assert mounts == {"natroute-identity": "/var/lib/natroute", "natroute-tmp": "/tmp"}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes["natroute-identity"]
    # The echo talks to the sidecar's data plane and receives on APP_DELIVER.
    tunnel_env = env_of(container(spec, "tunnel"))
    assert tunnel_env["NATROUTE_APP_LISTEN"] == "127.0.0.1:4100"
    assert tunnel_env["NATROUTE_APP_DELIVER"] == env["NATROUTE_SIDECAR_APP_DELIVER"]
    labels = find(rendered["tunnel"], "Deployment", f"{FULL}-tunnel")["spec"]["template"]
    assert labels["metadata"]["labels"]["natroute.io/node"] == "true"


def test_sidecar_settings_and_identity_claim_follow_values(
    rendered: dict[str, list[Manifest]],
) -> None:
    spec = pod_spec(rendered["everything-set"], "Deployment", "nr-tunnel")
    sidecar = container(spec, "natroute-sidecar")
    env = env_of(sidecar)
    assert env["NATROUTE_SIDECAR_REGISTRY_URL"] == "https://registry.example.net:9443"
    assert env["NATROUTE_SIDECAR_LAN_ADDRS"] == "10.1.2.3:4000"
    assert env["NATROUTE_SIDECAR_NAT_DETECT"] == "false"
    assert env["NATROUTE_SIDECAR_MAX_PEERS"] == "100000"
    assert env["NATROUTE_SIDECAR_TICK_INTERVAL"] == "0.25"
    # The user's appDeliver wins over the echo's default.
    assert env["NATROUTE_SIDECAR_APP_DELIVER"] == "127.0.0.1:4201"
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["natroute-identity"]["persistentVolumeClaim"] == {"claimName": "tunnel-identity"}
    tunnel = container(spec, "tunnel")
    assert tunnel["args"] == ["my-tunnel", "--verbose"]
    assert not any(d["kind"] == "ConfigMap" for d in rendered["everything-set"])


def test_unset_config_leaves_service_defaults(rendered: dict[str, list[Manifest]]) -> None:
    sidecar = container(
        pod_spec(rendered["tunnel"], "Deployment", f"{FULL}-tunnel"), "natroute-sidecar"
    )
    assert "NATROUTE_SIDECAR_MAX_PEERS" not in env_of(sidecar)
    registry = container(
        pod_spec(rendered["defaults"], "StatefulSet", f"{FULL}-registry"), "registry"
    )
    assert "NATROUTE_REGISTRY_NODE_TTL" not in env_of(registry)


# --- registry ---------------------------------------------------------------------


def test_registry_has_its_pvc_and_one_replica(rendered: dict[str, list[Manifest]]) -> None:
    sts = find(rendered["defaults"], "StatefulSet", f"{FULL}-registry")
    assert sts["spec"]["replicas"] == 1
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    registry = container(sts["spec"]["template"]["spec"], "registry")
    mounts = {m["name"]: m["mountPath"] for m in registry["volumeMounts"]}
    assert mounts["data"] == "/var/lib/natroute"
    env = env_of(registry)
    assert env["NATROUTE_REGISTRY_DB"] == "/var/lib/natroute/registry.db"
    assert env["NATROUTE_REGISTRY_HTTP_LISTEN"] == "0.0.0.0:9000"
    assert env["NATROUTE_REGISTRY_TOKEN"] == {
        "secretKeyRef": {"name": f"{FULL}-registry", "key": "token"}
    }
    assert "NATROUTE_REGISTRY_DEV" not in env
    assert _probe(registry, "livenessProbe") == ("/healthz", "http")
    assert _probe(registry, "readinessProbe") == ("/readyz", "http")
    service = find(rendered["defaults"], "Service", f"{FULL}-registry")
    assert service["spec"]["ports"][0]["port"] == 9000


def test_registry_without_persistence_uses_an_emptydir(
    rendered: dict[str, list[Manifest]],
) -> None:
    sts = find(rendered["everything-set"], "StatefulSet", "nr-registry")
    assert "volumeClaimTemplates" not in sts["spec"]
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    assert volumes["data"] == {"name": "data", "emptyDir": {}}


def test_registry_on_postgres_is_a_deployment_of_replicas(
    rendered: dict[str, list[Manifest]],
) -> None:
    manifests = rendered["postgres"]
    assert not [
        d for d in manifests if d["kind"] == "StatefulSet" and "registry" in d["metadata"]["name"]
    ]
    deployment = find(manifests, "Deployment", f"{FULL}-registry")
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    spec = deployment["spec"]["template"]["spec"]
    registry = container(spec, "registry")
    env = env_of(registry)
    assert env["NATROUTE_REGISTRY_DATABASE_URL"] == {
        "secretKeyRef": {"name": f"{FULL}-registry-database", "key": "url"}
    }
    assert "NATROUTE_REGISTRY_DB" not in env
    assert {m["name"] for m in registry["volumeMounts"]} == {"tmp"}
    assert {v["name"] for v in spec["volumes"]} == {"tmp"}
    url = _secret_value(manifests, f"{FULL}-registry-database", "url")
    assert url == "postgresql://natroute:db-password-0123@pg.example.net:5432/registry"
    assert find(manifests, "PodDisruptionBudget", f"{FULL}-registry")["spec"]["maxUnavailable"] == 1
    names = {d["metadata"]["name"] for d in manifests if d["kind"] == "Service"}
    assert f"{FULL}-registry" in names
    assert f"{FULL}-registry-headless" not in names
    assert not [d for d in manifests if d["kind"] == "PersistentVolumeClaim"]
    policy = _policy(manifests, f"{FULL}-registry")
    assert policy["egress"][0] == {
        "ports": [{"port": 5432, "protocol": "TCP"}],
        "to": [{"podSelector": {"matchLabels": {"app": "postgresql"}}}],
    }
    assert _ports(policy["egress"]) == {(5432, "TCP"), (53, "UDP"), (53, "TCP")}


def test_registry_on_an_existing_database_secret(rendered: dict[str, list[Manifest]]) -> None:
    manifests = rendered["postgres-existing-secret"]
    assert not any(d["metadata"]["name"].endswith("-registry-database") for d in manifests)
    deployment = find(manifests, "Deployment", f"{FULL}-registry")
    assert deployment["spec"]["replicas"] == 1
    env = env_of(container(deployment["spec"]["template"]["spec"], "registry"))
    assert env["NATROUTE_REGISTRY_DATABASE_URL"] == {
        "secretKeyRef": {"name": "ops-database", "key": "dsn"}
    }
    assert not any(
        d["kind"] == "PodDisruptionBudget" and "registry" in d["metadata"]["name"]
        for d in manifests
    )
    egress = _policy(manifests, f"{FULL}-registry")["egress"]
    assert egress[0] == {"ports": [{"port": 6432, "protocol": "TCP"}]}  # no `to`: any address


# --- tokens -------------------------------------------------------------------------


def _secret_value(manifests: list[Manifest], name: str, key: str) -> str:
    return base64.b64decode(find(manifests, "Secret", name)["data"][key]).decode()


def test_tokens_are_generated_never_defaulted(rendered: dict[str, list[Manifest]]) -> None:
    first = _secret_value(rendered["defaults"], f"{FULL}-registry", "token")
    again = _secret_value(render({}), f"{FULL}-registry", "token")
    admin = _secret_value(rendered["defaults"], f"{FULL}-sidecar", "admin-token")
    for token in (first, again, admin):
        assert len(token) == 40
        assert set(token) <= set(string.ascii_letters + string.digits)
    # No cluster to look up here, so each render draws a new one.
    assert first != again
    assert first != admin


def test_given_tokens_are_used(rendered: dict[str, list[Manifest]]) -> None:
    manifests = rendered["everything-set"]
    assert _secret_value(manifests, "nr-registry", "token") == "an-operator-token-of-32-characters"
    assert (
        _secret_value(manifests, "nr-sidecar", "admin-token") == "an-admin-token-of-30-characters"
    )


def test_existing_secrets_are_referenced_not_created(
    rendered: dict[str, list[Manifest]],
) -> None:
    manifests = rendered["existing-secrets"]
    assert not any(d["kind"] == "Secret" for d in manifests)
    registry = env_of(container(pod_spec(manifests, "StatefulSet", f"{FULL}-registry"), "registry"))
    beacon = env_of(container(pod_spec(manifests, "StatefulSet", f"{FULL}-beacon"), "beacon"))
    sidecar = env_of(
        container(pod_spec(manifests, "Deployment", f"{FULL}-tunnel"), "natroute-sidecar")
    )
    ref = {"secretKeyRef": {"name": "ops-registry", "key": "op"}}
    assert registry["NATROUTE_REGISTRY_TOKEN"] == ref
    assert beacon["NATROUTE_BEACON_REGISTRY_TOKEN"] == ref
    assert sidecar["NATROUTE_SIDECAR_ADMIN_TOKEN"] == {
        "secretKeyRef": {"name": "ops-sidecar", "key": "adm"}
    }


# --- beacons ------------------------------------------------------------------------


def test_beacons_gossip_register_and_spread(rendered: dict[str, list[Manifest]]) -> None:
    sts = find(rendered["defaults"], "StatefulSet", f"{FULL}-beacon")
    assert sts["spec"]["replicas"] == 2
    assert sts["spec"]["serviceName"] == f"{FULL}-beacon-headless"
    spec = sts["spec"]["template"]["spec"]
    beacon = container(spec, "beacon")
    env = env_of(beacon)
    headless = f"{FULL}-beacon-headless.natroute.svc.cluster.local"
    assert env["NATROUTE_BEACON_PEERS"] == ",".join(
        f"{FULL}-beacon-{i}.{headless}:9001" for i in range(2)
    )
    assert env["NATROUTE_BEACON_ADVERTISE"] == f"$(POD_NAME).{headless}:9001"
    assert env["NATROUTE_BEACON_REGISTRY_URL"] == REGISTRY_URL
    assert "NATROUTE_BEACON_BEACON_ID" not in env  # derived from the advertised address
    assert _probe(beacon, "livenessProbe") == ("/healthz", "http")
    assert _probe(beacon, "readinessProbe") == ("/readyz", "http")
    preferred = spec["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert preferred[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    pdb = find(rendered["defaults"], "PodDisruptionBudget", f"{FULL}-beacon")
    assert pdb["spec"]["maxUnavailable"] == 1
    headless_svc = find(rendered["defaults"], "Service", f"{FULL}-beacon-headless")
    assert headless_svc["spec"]["clusterIP"] == "None"
    assert headless_svc["spec"]["publishNotReadyAddresses"] is True


def test_loadbalancer_service_per_replica(rendered: dict[str, list[Manifest]]) -> None:
    for i in range(2):
        svc = find(rendered["defaults"], "Service", f"{FULL}-beacon-{i}")
        assert svc["spec"]["type"] == "LoadBalancer"
        assert svc["spec"]["externalTrafficPolicy"] == "Local"
        assert svc["spec"]["selector"]["statefulset.kubernetes.io/pod-name"] == f"{FULL}-beacon-{i}"
        # UDP, and the HTTP port: the stream relay for nodes without UDP (issue 12)
        assert svc["spec"]["ports"] == [
            {"name": "udp", "port": 9001, "targetPort": "udp", "protocol": "UDP"},
            {"name": "http", "port": 8001, "targetPort": "http", "protocol": "TCP"},
        ]


def test_shared_loadbalancer_keeps_clients_on_one_beacon(
    rendered: dict[str, list[Manifest]],
) -> None:
    manifests = rendered["shared-loadbalancer"]
    svc = find(manifests, "Service", f"{FULL}-beacon")
    assert svc["spec"]["sessionAffinity"] == "ClientIP"
    assert svc["spec"]["loadBalancerSourceRanges"] == ["0.0.0.0/0"]
    assert "statefulset.kubernetes.io/pod-name" not in svc["spec"]["selector"]
    # One replica: a budget of one unavailable pod would be meaningless.
    assert not any(d["kind"] == "PodDisruptionBudget" for d in manifests)


def test_nodeport_services_and_advertised_addresses(
    rendered: dict[str, list[Manifest]],
) -> None:
    manifests = rendered["nodeport"]
    for i, (port, http) in enumerate(((30901, 30801), (30902, 30802), (30903, 30803))):
        svc = find(manifests, "Service", f"{FULL}-beacon-{i}")
        assert svc["spec"]["type"] == "NodePort"
        assert [p["nodePort"] for p in svc["spec"]["ports"]] == [port, http]
    env = env_of(container(pod_spec(manifests, "StatefulSet", f"{FULL}-beacon"), "beacon"))
    assert env["BEACON_ADVERTISE_LIST"] == (
        "203.0.113.10:30901 203.0.113.11:30902 [2001:db8::12]:30903"
    )
    # Each replica's stream relay URL: its advertised host and its HTTP nodePort.
    assert env["BEACON_STREAM_LIST"] == (
        "ws://203.0.113.10:30801/v1/relay ws://203.0.113.11:30802/v1/relay "
        "ws://[2001:db8::12]:30803/v1/relay"
    )
    assert env["BEACON_ID_BASE"] == "100"
    sidecar = env_of(
        container(pod_spec(manifests, "Deployment", f"{FULL}-tunnel"), "natroute-sidecar")
    )
    assert sidecar["NATROUTE_SIDECAR_BEACONS"] == (
        "203.0.113.10:30901,203.0.113.11:30902,[2001:db8::12]:30903"
    )
    spec = pod_spec(manifests, "StatefulSet", f"{FULL}-beacon")
    required = spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert required[0]["topologyKey"] == "kubernetes.io/hostname"


# --- security, resources, images ----------------------------------------------------


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_no_container_runs_as_root(rendered: dict[str, list[Manifest]], name: str) -> None:
    specs = pod_specs(rendered[name])
    assert specs
    for _, spec in specs:
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True
        assert pod["runAsUser"] == 10001
        assert spec["automountServiceAccountToken"] is False
        assert not spec.get("hostNetwork")
        assert not spec.get("hostPID")
        # Volume kinds the Pod Security "restricted" level allows.
        for volume in spec["volumes"]:
            kinds = set(volume) - {"name"}
            assert kinds <= {"emptyDir", "configMap", "secret", "persistentVolumeClaim"}
        for item in spec["containers"]:
            ctx = item["securityContext"]
            assert ctx["runAsNonRoot"] is True
            assert ctx["runAsUser"] != 0
            assert ctx["readOnlyRootFilesystem"] is True
            assert ctx["allowPrivilegeEscalation"] is False
            assert ctx["capabilities"] == {"drop": ["ALL"]}
            assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
            assert not any("hostPort" in p for p in item.get("ports", []))
            assert "privileged" not in ctx
            assert item["resources"]["requests"]["cpu"]
            assert item["resources"]["limits"]["memory"]


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_natroute_containers_probe_healthz_and_readyz(
    rendered: dict[str, list[Manifest]], name: str
) -> None:
    for _, spec in pod_specs(rendered[name]):
        for item in spec["containers"]:
            if item["name"] == "tunnel":  # the user's workload
                continue
            if "livenessProbe" in item:  # tls-and-extras switches one off
                assert _probe(item, "livenessProbe")[0] == "/healthz"
            assert _probe(item, "readinessProbe")[0] == "/readyz"


def test_images_follow_values(rendered: dict[str, list[Manifest]]) -> None:
    images = {
        n: [c["image"] for c in s["containers"]] for n, s in pod_specs(rendered["everything-set"])
    }
    assert images["nr-registry"] == ["ghcr.io/acme/natroute/registry:1.2.3"]
    assert images["nr-beacon"] == ["natroute/beacon:0.1.0"]
    spec = pod_spec(rendered["everything-set"], "StatefulSet", "nr-registry")
    assert spec["containers"][0]["imagePullPolicy"] == "Always"
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]


# --- network policies and monitoring ------------------------------------------------


def _policy(manifests: list[Manifest], name: str) -> dict[str, Any]:
    spec: dict[str, Any] = find(manifests, "NetworkPolicy", name)["spec"]
    return spec


def _ports(rules: list[dict[str, Any]]) -> set[tuple[int | None, str]]:
    return {(p.get("port"), p["protocol"]) for rule in rules for p in rule.get("ports", [])}


def test_network_policies_admit_only_what_each_part_needs(
    rendered: dict[str, list[Manifest]],
) -> None:
    manifests = rendered["tunnel"]
    registry = _policy(manifests, f"{FULL}-registry")
    assert registry["policyTypes"] == ["Ingress", "Egress"]
    assert _ports(registry["ingress"]) == {(9000, "TCP")}
    assert "egress" not in registry  # it opens no connection
    sources = registry["ingress"][0]["from"]
    components = [
        s["podSelector"]["matchLabels"].get("app.kubernetes.io/component") for s in sources
    ]
    assert components == ["beacon", "tunnel", "test", None]
    beacon = _policy(manifests, f"{FULL}-beacon")
    # UDP and the stream relay's TCP port from anywhere: nodes anywhere use them.
    assert beacon["ingress"] == [
        {"ports": [{"port": 9001, "protocol": "UDP"}]},
        {"ports": [{"port": 8001, "protocol": "TCP"}]},
    ]
    assert _ports(beacon["egress"]) == {(None, "UDP"), (53, "TCP"), (9000, "TCP")}
    tunnel = _policy(manifests, f"{FULL}-tunnel")
    assert _ports(tunnel["ingress"]) == {(4000, "UDP")}
    assert _ports(tunnel["egress"]) == {(None, "UDP"), (53, "TCP"), (9000, "TCP"), (8001, "TCP")}
    # Without the stream relay, the beacons' HTTP port is for the admin peers and helm test.
    closed = render({"beacon": {"config": {"stream": False}}, "tunnel": {"enabled": True}})
    beacon = _policy(closed, f"{FULL}-beacon")
    assert beacon["ingress"][1]["ports"] == [{"port": 8001, "protocol": "TCP"}]
    (test,) = beacon["ingress"][1]["from"]
    assert test["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "test"
    assert (8001, "TCP") not in _ports(_policy(closed, f"{FULL}-tunnel")["egress"])


def test_admin_ports_open_to_admin_peers(rendered: dict[str, list[Manifest]]) -> None:
    manifests = rendered["servicemonitor"]
    monitoring = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    }
    tunnel = _policy(manifests, f"{FULL}-tunnel")
    assert tunnel["ingress"][1] == {
        "from": [monitoring],
        "ports": [{"port": 8080, "protocol": "TCP"}],
    }
    assert monitoring in _policy(manifests, f"{FULL}-registry")["ingress"][0]["from"]


def test_network_policies_can_be_switched_off(rendered: dict[str, list[Manifest]]) -> None:
    assert not any(d["kind"] == "NetworkPolicy" for d in rendered["everything-set"])


def test_servicemonitor_selects_the_metrics_services(
    rendered: dict[str, list[Manifest]],
) -> None:
    manifests = rendered["servicemonitor"]
    monitor = find(manifests, "ServiceMonitor", FULL)
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    selector = monitor["spec"]["selector"]["matchLabels"]
    port = monitor["spec"]["endpoints"][0]["port"]
    selected = [
        d
        for d in manifests
        if d["kind"] == "Service" and selector.items() <= d["metadata"]["labels"].items()
    ]
    assert sorted(d["metadata"]["name"] for d in selected) == [
        f"{FULL}-beacon-headless",
        f"{FULL}-registry",
    ]
    for svc in selected:
        assert port in {p["name"] for p in svc["spec"]["ports"]}
    pod_monitor = find(manifests, "PodMonitor", f"{FULL}-tunnel")
    assert pod_monitor["spec"]["podMetricsEndpoints"][0]["port"] == "natroute-admin"
    # Scrape annotations are switched off in this set.
    for doc in manifests:
        if doc["kind"] in {"StatefulSet", "Deployment"}:
            annotations = doc["spec"]["template"]["metadata"].get("annotations", {})
            assert "prometheus.io/scrape" not in annotations
    assert not any(d["kind"] == "ServiceMonitor" for d in rendered["defaults"])


def test_scrape_annotations_by_default(rendered: dict[str, list[Manifest]]) -> None:
    ports = {}
    for doc in rendered["tunnel"]:
        if doc["kind"] in {"StatefulSet", "Deployment"}:
            annotations = doc["spec"]["template"]["metadata"]["annotations"]
            assert annotations["prometheus.io/scrape"] == "true"
            assert annotations["prometheus.io/path"] == "/metrics"
            ports[doc["metadata"]["name"]] = annotations["prometheus.io/port"]
    assert ports == {f"{FULL}-registry": "9000", f"{FULL}-beacon": "8001", f"{FULL}-tunnel": "8080"}


def test_standard_labels_everywhere(rendered: dict[str, list[Manifest]]) -> None:
    for doc in rendered["tunnel"]:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "natroute"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["helm.sh/chart"] == "natroute-0.1.0"


def test_notes_tell_how_to_reach_the_admin_apis() -> None:
    notes = render_notes(VALUE_SETS["tunnel"])
    assert f"port-forward svc/{FULL}-registry 9000:9000" in notes
    assert f"port-forward pod/{FULL}-beacon-0 8001:8001" in notes
    assert f"port-forward deploy/{FULL}-tunnel 8080:8080" in notes
    assert f"get secret {FULL}-registry" in notes
    assert f"get secret {FULL}-sidecar" in notes
    assert "natroute status --admin-url http://127.0.0.1:8080" in notes
    assert f"helm test {RELEASE} -n natroute" in notes
    assert "-c natroute-sidecar -- natroute status\n" in notes
