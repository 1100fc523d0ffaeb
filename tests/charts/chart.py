"""Offline renders of ``charts/natroute`` for the chart tests, and lookups on them.

Helm's own engine (helm-python-sdk) renders the chart with no cluster: the
``lookup`` function returns nothing, so generated tokens are fresh each render.
``VALUE_SETS`` are the realistic configurations every test module checks.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Final

import helm_python as helm
import yaml

__all__ = [
    "CHART_DIR",
    "NAMESPACE",
    "RELEASE",
    "VALUE_SETS",
    "Manifest",
    "camel_to_snake",
    "container",
    "env_of",
    "find",
    "pod_spec",
    "pod_specs",
    "render",
    "render_notes",
]

CHART_DIR: Final = Path(__file__).resolve().parents[2] / "charts" / "natroute"
RELEASE: Final = "demo"
NAMESPACE: Final = "natroute"

#: One rendered Kubernetes object.
Manifest = dict[str, Any]

#: Every sidecar setting the chart lets the user set, with a valid non-default value.
SIDECAR_CONFIG: Final[dict[str, Any]] = {
    "name": "tunnel-1",
    "registryUrl": "https://registry.example.net:9443",
    "beacons": "198.51.100.7:9001,beacon.example.net:9001",
    "appListen": "127.0.0.1:4200",
    "appDeliver": "127.0.0.1:4201",
    "advertise": "203.0.113.50:4000",
    "lanAddrs": "10.1.2.3:4000",
    "relayOnly": True,
    "natDetect": False,
    "stream": False,
    "beaconStream": "wss://beacon.example.net:8443/v1/relay",
    "streamAfter": 45,
    "udpRetryInterval": 3,
    "udpRetryMaxInterval": 120,
    "streamCaFile": "/etc/natroute/ca.pem",
    "beaconRttProbe": True,
    "refreshInterval": 120,
    "refreshJitter": 5.5,
    "beaconKeepaliveInterval": 12,
    "beaconDeadAfter": 40,
    "beaconQuarantine": 90,
    "heartbeatInterval": 45,
    "discoverTimeout": 3,
    "tickInterval": 0.25,
    "udpBatch": False,
    "udpBuffer": 1048576,
    "blackholeThreshold": 10,
    "blackholeMisses": 4,
    "directClears": 5,
    "sendErrThreshold": 6,
    "maxRelayPeers": 1000,
    "maxPeers": 100000,
    "checkWindow": 7,
    "checkInterval": 0.3,
    "reevaluateInterval": 90,
    "oneWayRounds": 4,
    "offlineAfter": 60,
    "hostCandidates": False,
    "probeInitialInterval": 4,
    "probeMaxInterval": 300,
    "peerKeepaliveInterval": 20,
    "peerRefreshInterval": 90,
    "peerIdleTimeout": 1200,
    "logLevel": "debug",
    "logFormat": "text",
}

REGISTRY_CONFIG: Final[dict[str, Any]] = {
    "beaconAddr": "beacon.example.net:9001",
    "allowLocalEndpoints": False,
    "nodeTtl": 120,
    "beaconTtl": 75.5,
    "retention": 2592000,
    "signatureSkew": 30,
    "sqliteSynchronous": "NORMAL",
    "databasePoolSize": 20,
    "keyCacheSize": 200000,
    "maxBodyBytes": 32768,
    "registerRate": 0.25,
    "registerBurst": 20,
    "rateLimitClients": 50000,
    "logLevel": "warning",
    "logFormat": "text",
}

BEACON_CONFIG: Final[dict[str, Any]] = {
    "strict": False,
    "nodeTtl": 300,
    "nodeCap": 1000000,
    "sweepInterval": 30,
    "gossipInterval": 5,
    "gossipTtl": 20,
    "registerInterval": 15,
    "discoverRate": 20,
    "discoverBurst": 80,
    "punchRate": 4,
    "punchBurst": 20,
    "relayRate": 0,
    "relayBurst": 20000,
    "relayByteRate": 16000000,
    "relayByteBurst": 32000000,
    "limiterCap": 131072,
    "authMaxSkew": 60,
    "sendBufferLimit": 8388608,
    "requireSignature": True,
    "nodeQuotaHost": 64,
    "nodeQuotaNet": 0,
    "streamMaxSessions": 4096,
    "streamIdleTimeout": 120,
    "streamTrustFirstKey": False,
    "logLevel": "error",
    "logFormat": "text",
}

VALUE_SETS: Final[dict[str, dict[str, Any]]] = {
    "defaults": {},
    "tunnel": {"tunnel": {"enabled": True}},
    "nodeport": {
        "beacon": {
            "replicas": 3,
            "advertise": ["203.0.113.10:30901", "203.0.113.11:30902", "[2001:db8::12]:30903"],
            "beaconIdBase": 100,
            "antiAffinity": "hard",
            "service": {
                "type": "NodePort",
                "nodePorts": [30901, 30902, 30903],
                "httpNodePorts": [30801, 30802, 30803],
            },
        },
        "tunnel": {"enabled": True},
    },
    "shared-loadbalancer": {
        "beacon": {
            "replicas": 1,
            "service": {
                "perReplica": False,
                "loadBalancerSourceRanges": ["0.0.0.0/0"],
                "annotations": {"service.beta.kubernetes.io/aws-load-balancer-type": "nlb"},
            },
            "pdb": {"enabled": True},
        },
    },
    "postgres": {
        "registry": {
            "replicas": 3,
            "database": {
                "url": "postgresql://natroute:db-password-0123@pg.example.net:5432/registry",
                "networkPolicyTo": [{"podSelector": {"matchLabels": {"app": "postgresql"}}}],
            },
        },
    },
    "postgres-existing-secret": {
        "registry": {
            "database": {
                "existingSecret": "ops-database",
                "existingSecretKey": "dsn",
                "port": 6432,
            },
        },
    },
    "existing-secrets": {
        "registry": {"token": {"existingSecret": "ops-registry", "existingSecretKey": "op"}},
        "sidecar": {"adminToken": {"existingSecret": "ops-sidecar", "existingSecretKey": "adm"}},
        "tunnel": {"enabled": True},
    },
    "servicemonitor": {
        "metrics": {
            "podAnnotations": False,
            "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
        },
        "networkPolicy": {
            "adminFrom": [
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
                    }
                }
            ],
        },
        "tunnel": {"enabled": True},
    },
    "sidecar-only": {
        # What a tunnel chart with natroute as a dependency typically sets.
        "registry": {"enabled": False},
        "beacon": {"enabled": False},
        "sidecar": {"config": {"registryUrl": "http://registry.natroute.svc:9000"}},
        "tunnel": {"enabled": True},
    },
    "tls-and-extras": {
        "beacon": {
            "replicas": 2,
            "advertise": ["203.0.113.10:9001", "203.0.113.11:9001"],
            "advertiseStream": [
                "wss://b0.example.net/v1/relay",
                "wss://b1.example.net:8443/v1/relay",
            ],
            "config": {
                "tlsCert": "/etc/natroute/tls/tls.crt",
                "tlsKey": "/etc/natroute/tls/tls.key",
            },
            "extraVolumes": [{"name": "tls", "secret": {"secretName": "beacon-tls"}}],
            "extraVolumeMounts": [
                {"name": "tls", "mountPath": "/etc/natroute/tls", "readOnly": True}
            ],
            "extraEnv": [{"name": "NATROUTE_BEACON_LOG_FORMAT", "value": "text"}],
            "livenessProbe": {"periodSeconds": 30, "timeoutSeconds": 5},
            "startupProbe": {"enabled": False},
        },
        "registry": {
            "extraEnv": [
                {
                    "name": "NATROUTE_REGISTRY_SIGNATURE_SKEW",
                    "valueFrom": {"configMapKeyRef": {"name": "ops", "key": "skew"}},
                }
            ],
            "extraVolumes": [{"name": "extra", "emptyDir": {}}],
            "extraVolumeMounts": [{"name": "extra", "mountPath": "/srv/extra"}],
            "readinessProbe": {"periodSeconds": 5, "successThreshold": 2},
        },
        "sidecar": {
            "extraEnv": [{"name": "NATROUTE_SIDECAR_LOG_FORMAT", "value": "text"}],
            "extraVolumes": [{"name": "ca", "configMap": {"name": "beacon-ca"}}],
            "extraVolumeMounts": [{"name": "ca", "mountPath": "/etc/natroute/ca"}],
            "livenessProbe": {"enabled": False},
            "config": {"streamCaFile": "/etc/natroute/ca/ca.pem"},
        },
        "tunnel": {"enabled": True},
    },
    "everything-set": {
        "fullnameOverride": "nr",
        "imagePullSecrets": [{"name": "regcred"}],
        "registry": {
            "image": {"registry": "ghcr.io/acme", "tag": "1.2.3", "pullPolicy": "Always"},
            "token": {"value": "an-operator-token-of-32-characters"},
            "persistence": {"enabled": False},
            "config": REGISTRY_CONFIG,
        },
        "beacon": {"antiAffinity": "none", "config": BEACON_CONFIG},
        "sidecar": {
            "adminToken": {"value": "an-admin-token-of-30-characters"},
            "identity": {"existingClaim": "tunnel-identity"},
            "config": SIDECAR_CONFIG,
        },
        "tunnel": {"enabled": True, "replicas": 1, "args": ["my-tunnel", "--verbose"]},
        "networkPolicy": {"enabled": False},
    },
}


def _load(values: dict[str, Any]) -> dict[str, str]:
    with helm.Chart.load(CHART_DIR) as chart:
        return chart.render(values, name=RELEASE, namespace=NAMESPACE)


def render(values: dict[str, Any]) -> list[Manifest]:
    """Every object the chart renders with ``values`` (NOTES.txt left out).

    Raises:
        helm_python.HelmValuesError: the values break values.schema.json.
        helm_python.HelmRenderError: a template failed (e.g. a ``fail`` call).
    """
    manifests: list[Manifest] = []
    for path, text in sorted(_load(values).items()):
        if path.endswith(".yaml"):
            manifests.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return manifests


def render_notes(values: dict[str, Any]) -> str:
    """The rendered NOTES.txt."""
    return next(text for path, text in _load(values).items() if path.endswith("NOTES.txt"))


def find(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    """The one object of ``kind`` named ``name``.

    Raises:
        LookupError: there is none.
    """
    for doc in manifests:
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise LookupError(f"no {kind} {name}")


_WORKLOADS: Final = frozenset({"Deployment", "StatefulSet", "DaemonSet", "Job"})


def pod_specs(manifests: list[Manifest]) -> list[tuple[str, dict[str, Any]]]:
    """(object name, pod spec) of every workload."""
    return [
        (doc["metadata"]["name"], doc["spec"]["template"]["spec"])
        for doc in manifests
        if doc["kind"] in _WORKLOADS
    ]


def pod_spec(manifests: list[Manifest], kind: str, name: str) -> dict[str, Any]:
    """The pod template spec of one workload."""
    spec: dict[str, Any] = find(manifests, kind, name)["spec"]["template"]["spec"]
    return spec


def container(spec: dict[str, Any], name: str) -> dict[str, Any]:
    """One container of a pod spec, by name.

    Raises:
        LookupError: there is none.
    """
    for item in spec["containers"]:
        if item["name"] == name:
            found: dict[str, Any] = item
            return found
    raise LookupError(f"no container {name}")


def env_of(item: dict[str, Any]) -> dict[str, Any]:
    """A container's env as name → value (a str) or valueFrom (a dict)."""
    return {e["name"]: e["value"] if "value" in e else e["valueFrom"] for e in item.get("env", [])}


def camel_to_snake(key: str) -> str:
    """``beaconRttProbe`` → ``beacon_rtt_probe`` (values key → settings field)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()
