"""The service images: each target starts its service, healthy, as user natroute.

The images are built by the session fixture from ``docker/Dockerfile`` (offline
from the local base image here); these tests run each target's own command
and check its ``/healthz`` from inside the container and the uid it runs as.
"""

from __future__ import annotations

from typing import Any

import pytest

from .engine import Images, LabError
from .lab import Lab

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]

#: uid of the natroute user created in docker/Dockerfile.
NATROUTE_UID = "10001"

#: Prints "UID CMDLINE" for every process of the container except the listing itself.
PROCESS_LISTING = """
import os
for pid in filter(str.isdigit, os.listdir("/proc")):
    if int(pid) == os.getpid():
        continue
    try:
        with open(f"/proc/{pid}/status") as status, open(f"/proc/{pid}/cmdline", "rb") as cmd:
            uid = status.read().split("Uid:")[1].split()[0]
            print(uid, cmd.read().replace(b"\\0", b" ").decode().strip())
    except OSError:
        pass
"""


def _uids_of(lab: Lab, container: Any, target: str) -> set[str]:
    code, listing = lab.exec(container, ["python3", "-c", PROCESS_LISTING])
    assert code == 0, listing
    script = f"/opt/natroute/bin/python3 /opt/natroute/bin/natroute-{target}"
    processes = [line.split(" ", 1) for line in listing.splitlines() if " " in line]
    uids = {uid for uid, cmd in processes if cmd.startswith(script)}
    assert uids, listing
    return uids


def test_service_targets_run_their_services_unprivileged(lab: Lab, images: Images) -> None:
    net = lab.network("net")
    registry_ip, beacon_ip, sidecar_ip = net.host(10), net.host(11), net.host(12)
    registry_url = f"http://{registry_ip}:9000"

    registry = lab.node(
        "registry", images.registry, (net, registry_ip), None, command=None,
        environment={"NATROUTE_REGISTRY_DEV": "true"},
    )  # fmt: skip
    beacon = lab.node(
        "beacon", images.beacon, (net, beacon_ip), None, command=None,
        environment={
            "NATROUTE_BEACON_REGISTRY_URL": registry_url,
            "NATROUTE_BEACON_REGISTRY_TOKEN": "dev",
            "NATROUTE_BEACON_ADVERTISE": f"{beacon_ip}:9001",
        },
    )  # fmt: skip
    sidecar = lab.node(
        "sidecar", images.sidecar, (net, sidecar_ip), None, command=None,
        environment={
            "NATROUTE_SIDECAR_REGISTRY_URL": registry_url,
            "NATROUTE_SIDECAR_BEACONS": f"{beacon_ip}:9001",
        },
    )  # fmt: skip
    lab.wait_http(registry, "http://127.0.0.1:9000/healthz")
    lab.wait_http(beacon, "http://127.0.0.1:8001/healthz")
    lab.wait_http(sidecar, "http://127.0.0.1:8080/healthz", timeout=30)

    for container, target in ((registry, "registry"), (beacon, "beacon"), (sidecar, "sidecar")):
        assert _uids_of(lab, container, target) == {NATROUTE_UID}, target


@pytest.mark.parametrize(
    ("mode", "environment", "message"),
    [
        ("bogus", {}, "unknown NAT_MODE"),
        ("symmetric", {"NAT_HAIRPIN": "on"}, "NAT_HAIRPIN=on needs an endpoint-independent"),
        ("public", {}, "NAT_PUBLIC_HOST"),
        ("cone", {"NAT_WAN_GATEWAY": "10.0.0.1"}, "is not in"),
    ],
)
def test_router_image_refuses_a_wrong_setting(
    lab: Lab, images: Images, mode: str, environment: dict[str, str], message: str
) -> None:
    wan, lan = lab.network("wan"), lab.network("lan")

    with pytest.raises(LabError, match=message):
        lab.router(
            "router", images.router, mode, (wan, wan.host(2)), (lan, lan.host(2)),
            environment=environment,
        )  # fmt: skip
