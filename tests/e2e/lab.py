"""Docker SDK harness for natroute's NAT labs.

A :class:`Lab` creates bridge networks with explicit subnets inside
198.18.0.0/15, NAT router containers (``docker/router``) with a WAN and a LAN
leg, and node containers that route through them; everything carries the label
``natroute-e2e=1`` plus a per-lab run label, and :meth:`Lab.close` removes it
all, also after a failure. Facts this relies on:
engine API 1.41 (a container is created on one network and the second one is
connected before ``start()``), and offline image builds from a local base image
with ``network_mode="none"`` and wheels in ``docker/wheels`` (see ``engine``).

Every wait is bounded: container commands run under ``timeout``, readiness
polls stop at a deadline and raise :class:`LabError` with the container's log.

Command line (used by ``.ci/docker-setup``)::

    python -m tests.e2e.lab build     # build the images, print times and sizes
    python -m tests.e2e.lab cleanup   # remove everything labelled natroute-e2e=1
"""

from __future__ import annotations

import ipaddress
import json
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import docker
import docker.errors
import docker.types

from .engine import LabError, build_images, engine_client

__all__ = [
    "EXPLICIT_POOL",
    "LABEL",
    "LAB_NETWORK_OPTIONS",
    "LAB_SUPERNET",
    "Lab",
    "LabNetwork",
    "Router",
    "cleanup_all",
    "main",
    "parse_json_line",
    "remove_labelled",
    "script_source",
    "used_subnets",
]

LABEL = "natroute-e2e"
#: Everything the lab creates lives here (also dockerd's own address pool).
LAB_SUPERNET = ipaddress.IPv4Network("198.18.0.0/15")
#: Explicit lab subnets come from the lower half; dockerd allocates from 198.18.128.0/17.
EXPLICIT_POOL = ipaddress.IPv4Network("198.18.0.0/17")
SCRIPTS = Path(__file__).resolve().parent / "scripts"
#: Bridge options of every lab network: the engine must not masquerade what crosses
#: the host. With bridged frames passing the host's iptables (br_netfilter), a
#: network's masquerade rule rewrote a datagram that a router had forwarded into its
#: LAN to come from that LAN bridge's .1 address (docs/e2e.md, "A faithful internet").
LAB_NETWORK_OPTIONS = {"com.docker.network.bridge.enable_ip_masquerade": "false"}


def script_source(name: str) -> str:
    """The source of ``tests/e2e/scripts/NAME.py``, to run as ``python3 -c``."""
    return (SCRIPTS / f"{name}.py").read_text()


def used_subnets(client: docker.DockerClient) -> list[ipaddress.IPv4Network]:
    """The IPv4 subnets of every network the engine has."""
    used = []
    for net in client.networks.list():
        for cfg in (net.attrs.get("IPAM") or {}).get("Config") or []:
            try:
                subnet = ipaddress.ip_network(cfg.get("Subnet", ""), strict=False)
            except ValueError:
                continue
            if isinstance(subnet, ipaddress.IPv4Network):
                used.append(subnet)
    return used


@dataclass(frozen=True)
class LabNetwork:
    """A lab network and its addresses."""

    name: str
    subnet: ipaddress.IPv4Network

    def host(self, index: int) -> str:
        """The subnet's ``index``-th address (1 is the engine's gateway)."""
        return str(self.subnet.network_address + index)


@dataclass(frozen=True)
class Router:
    """A NAT router container."""

    container: Any
    mode: str
    wan_ip: str
    lan_ip: str


@dataclass
class Lab:
    """One lab: networks and containers under a run label, removed by :meth:`close`.

    Use as a context manager. Names are prefixed with ``natroute-e2e-RUN-``.
    """

    client: docker.DockerClient
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    _containers: list[Any] = field(default_factory=list)
    _networks: list[Any] = field(default_factory=list)

    @property
    def labels(self) -> dict[str, str]:
        """Labels put on everything this lab creates."""
        return {LABEL: "1", f"{LABEL}.run": self.run_id}

    def _name(self, name: str) -> str:
        return f"{LABEL}-{self.run_id}-{name}"

    def __enter__(self) -> Lab:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- networks -------------------------------------------------------------
    def network(self, name: str, *, internal: bool = False) -> LabNetwork:
        """Create a bridge network on the first free /24 of :data:`EXPLICIT_POOL`.

        Args:
            name: short name (prefixed with the lab's run).
            internal: no route to the host (only for a WAN: LANs must not be internal,
                the engine's isolation rules would drop what the router forwards).

        Returns:
            The network.

        Raises:
            LabError: no free subnet is left.
        """
        for subnet in EXPLICIT_POOL.subnets(new_prefix=24):
            if any(subnet.overlaps(used) for used in used_subnets(self.client)):
                continue
            ipam = docker.types.IPAMConfig(
                pool_configs=[docker.types.IPAMPool(subnet=str(subnet), gateway=str(subnet[1]))]
            )
            try:
                net = self.client.networks.create(
                    self._name(name),
                    driver="bridge",
                    ipam=ipam,
                    internal=internal,
                    labels=self.labels,
                    options=LAB_NETWORK_OPTIONS,
                    check_duplicate=True,
                )
            except docker.errors.APIError as exc:
                if "overlap" in str(exc).lower():
                    continue  # taken by a concurrent run between listing and creating
                raise
            self._networks.append(net)
            return LabNetwork(self._name(name), subnet)
        raise LabError(f"no free /24 left in {EXPLICIT_POOL}")

    # --- containers -----------------------------------------------------------
    def container(
        self,
        name: str,
        image: str,
        networks: Sequence[tuple[LabNetwork, str]],
        *,
        command: Sequence[str] | None = None,
        environment: Mapping[str, str] | None = None,
        cap_add: Sequence[str] = (),
        sysctls: Mapping[str, str] | None = None,
        init: bool = True,
    ) -> Any:
        """Create and start a container on ``networks`` (network, fixed address).

        The first network is attached at create, the others are connected before
        ``start()`` (API 1.41 takes only one network at create).

        Returns:
            The started container (a ``docker.models.containers.Container``).
        """
        first, first_ip = networks[0]
        container = self.client.containers.create(
            image,
            command=list(command) if command is not None else None,
            name=self._name(name),
            hostname=name,
            labels=self.labels,
            environment=dict(environment or {}),
            cap_add=list(cap_add),
            sysctls=dict(sysctls or {}),
            init=init,
            network=first.name,
            networking_config={
                first.name: self.client.api.create_endpoint_config(ipv4_address=first_ip)
            },
            detach=True,
        )
        self._containers.append(container)
        for net, ip in networks[1:]:
            self.client.networks.get(net.name).connect(container, ipv4_address=ip)
        container.start()
        return container

    def attached(
        self,
        name: str,
        image: str,
        target: Any,
        *,
        command: Sequence[str] | None = None,
        environment: Mapping[str, str] | None = None,
    ) -> Any:
        """Start a container in ``target``'s network namespace (the sidecar pattern).

        After ``target`` restarts, restart this one too: it keeps the old namespace.

        Returns:
            The started container.
        """
        container = self.client.containers.create(
            image,
            command=list(command) if command is not None else None,
            name=self._name(name),
            labels=self.labels,
            environment=dict(environment or {}),
            init=True,
            network_mode=f"container:{target.id}",
            detach=True,
        )
        self._containers.append(container)
        container.start()
        return container

    def router(
        self,
        name: str,
        image: str,
        mode: str,
        wan: tuple[LabNetwork, str],
        lan: tuple[LabNetwork, str],
        *,
        environment: Mapping[str, str] | None = None,
        ready_timeout: float = 15.0,
    ) -> Router:
        """Start a NAT router (``docker/router``) and wait until its rules are in.

        Args:
            name: short name.
            image: the router image.
            mode: ``NAT_MODE``, a preset of ``topology.PRESETS`` (or the alias cone).
            wan: the WAN network and the router's address on it.
            lan: the LAN network and the router's address on it (the nodes' gateway).
            environment: extra settings (``NAT_HAIRPIN``, ``NAT_WAN_GATEWAY``,
                ``NAT_PUBLIC_HOST``, ...).
            ready_timeout: seconds to wait for the router to report ready.

        Returns:
            The router.

        Raises:
            LabError: it did not become ready in time.
        """
        env = {"NAT_MODE": mode, "NAT_WAN_SUBNET": str(wan[0].subnet), **(environment or {})}
        container = self.container(
            name,
            image,
            [wan, lan],
            environment=env,
            cap_add=["NET_ADMIN"],
            sysctls={"net.ipv4.ip_forward": "1"},
            init=False,  # nat-router handles SIGTERM itself
        )
        self.wait_for_log(container, "nat-router: ready", ready_timeout)
        return Router(container, mode, wan[1], lan[1])

    def node(
        self,
        name: str,
        image: str,
        lan: tuple[LabNetwork, str],
        gateway: str | None,
        *,
        command: Sequence[str] | None = ("sleep", "infinity"),
        environment: Mapping[str, str] | None = None,
    ) -> Any:
        """Start a natroute container; with ``gateway`` it routes via that router.

        ``command`` None runs the image's own command (a service target's CMD).

        Returns:
            The started container.
        """
        env = dict(environment or {})
        if gateway is not None:
            env["DEFAULT_ROUTE"] = gateway
        return self.container(
            name, image, [lan], command=command, environment=env, cap_add=["NET_ADMIN"]
        )

    def wait_for_log(self, container: Any, text: str, timeout: float) -> None:
        """Wait until ``text`` appears in the container's output.

        Raises:
            LabError: the container exited or ``timeout`` seconds passed.
        """
        deadline = time.monotonic() + timeout
        while True:
            logs = container.logs().decode("utf-8", "replace")
            if text in logs:
                return
            container.reload()
            if container.status not in ("created", "running"):
                raise LabError(f"{container.name} {container.status} before {text!r}:\n{logs}")
            if time.monotonic() > deadline:
                raise LabError(f"{container.name}: no {text!r} after {timeout} s:\n{logs}")
            time.sleep(0.1)

    def wait_http(self, container: Any, url: str, timeout: float = 20.0) -> None:
        """Wait until ``url``, fetched from inside the container, answers 2xx.

        Raises:
            LabError: it did not within ``timeout`` seconds.
        """
        check = "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)"
        deadline = time.monotonic() + timeout
        while True:
            try:
                code, output = self.exec(container, ["python3", "-c", check, url], timeout=5)
            except docker.errors.APIError as exc:  # the container stopped meanwhile
                code, output = -1, str(exc)
            if code == 0:
                return
            container.reload()
            if container.status != "running" or time.monotonic() > deadline:
                logs = container.logs().decode("utf-8", "replace")[-3000:]
                raise LabError(f"{container.name}: {url} not ready ({output[-500:]}):\n{logs}")
            time.sleep(0.2)

    def exec(
        self, container: Any, command: Sequence[str], *, timeout: float = 20.0, user: str = ""
    ) -> tuple[int, str]:
        """Run ``command`` in the container under ``timeout`` (coreutils).

        Returns:
            The exit code (124 on timeout) and the combined output.
        """
        result = container.exec_run(["timeout", str(timeout), *command], user=user)
        return int(result.exit_code), result.output.decode("utf-8", "replace")

    def start_script(
        self, container: Any, script: str, *args: str, output: str, timeout: float = 20.0
    ) -> None:
        """Start ``tests/e2e/scripts/SCRIPT.py`` in the background as user natroute.

        Its output goes to the file ``output`` in the container; read it with
        :meth:`wait_json_lines`. It is killed after ``timeout`` seconds.
        """
        command = ["timeout", str(timeout), "python3", "-c", script_source(script), *args]
        container.exec_run(
            ["sh", "-c", 'exec "$@" >"$0" 2>&1', output, *command], user="natroute", detach=True
        )

    def wait_json_lines(
        self, container: Any, output: str, count: int, *, timeout: float = 10.0
    ) -> list[dict[str, Any]]:
        """Wait until the file ``output`` in the container holds ``count`` JSON lines.

        Returns:
            The first ``count`` JSON objects.

        Raises:
            LabError: they did not appear within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            _, text = self.exec(container, ["cat", output])
            objects = []
            for line in text.splitlines():
                try:
                    value = json.loads(line)
                except ValueError:
                    continue
                if isinstance(value, dict):
                    objects.append(value)
            if len(objects) >= count:
                return objects[:count]
            if time.monotonic() > deadline:
                raise LabError(f"{container.name}:{output}: {len(objects)}/{count} lines:\n{text}")
            time.sleep(0.1)

    def run_script(
        self, container: Any, script: str, *args: str, timeout: float = 20.0
    ) -> dict[str, Any]:
        """Run ``tests/e2e/scripts/SCRIPT.py`` in the container as user natroute.

        Returns:
            The JSON object of its last output line.

        Raises:
            LabError: it printed no JSON (its output is in the message).
        """
        code, output = self.exec(
            container,
            ["python3", "-c", script_source(script), *args],
            timeout=timeout,
            user="natroute",
        )
        return parse_json_line(output, f"{script} {' '.join(args)} (exit {code})")

    # --- teardown -------------------------------------------------------------
    def close(self) -> None:
        """Remove every container and network of this run (by label too)."""
        remove_labelled(self.client, f"{LABEL}.run={self.run_id}")
        self._containers.clear()
        self._networks.clear()


def parse_json_line(output: str, what: str) -> dict[str, Any]:
    """The last line of ``output`` that is a JSON object.

    Raises:
        LabError: there is none.
    """
    for line in reversed(output.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    raise LabError(f"{what}: no JSON in output:\n{output}")


def remove_labelled(client: docker.DockerClient, label: str) -> int:
    """Force-remove containers, then networks, carrying ``label`` (``k`` or ``k=v``).

    Returns:
        How many objects were removed.
    """
    removed = 0
    for container in client.containers.list(all=True, filters={"label": label}):
        try:
            container.remove(force=True, v=True)
            removed += 1
        except docker.errors.NotFound:
            pass
    for net in client.networks.list(filters={"label": label}):
        try:
            net.remove()
            removed += 1
        except docker.errors.NotFound:
            pass
    return removed


def cleanup_all(client: docker.DockerClient) -> int:
    """Remove everything any lab left behind (label ``natroute-e2e=1``)."""
    return remove_labelled(client, f"{LABEL}=1")


def main(argv: Sequence[str]) -> int:
    """``build`` or ``cleanup`` (see the module docstring).

    Returns:
        The exit status.
    """
    client = engine_client()
    if client is None:
        print("no Docker engine answers (run .ci/docker-setup)", file=sys.stderr)
        return 1
    try:
        match list(argv):
            case ["build"]:
                build_images(client, report=True)
            case ["cleanup"]:
                print(f"removed {cleanup_all(client)} labelled objects")
            case _:
                print("usage: python -m tests.e2e.lab build|cleanup", file=sys.stderr)
                return 2
    except LabError as exc:
        print(exc, file=sys.stderr)
        return 1
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
