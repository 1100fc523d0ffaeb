"""Engine access and image builds for the e2e suite (tests/e2e).

:func:`engine_client` answers None when no engine is reachable (the suite then
skips, or fails under ``CI=true``). :func:`build_images` builds the service
targets of ``docker/Dockerfile`` and the router image, offline from the local
base image (``network_mode`` none, wheels in ``docker/wheels``) when it exists,
as ``.ci/docker-setup`` prepares it.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors

__all__ = [
    "DEFAULT_LOCAL_BASE",
    "REPO_ROOT",
    "SERVICE_TARGETS",
    "Images",
    "LabError",
    "build_images",
    "default_tag",
    "engine_client",
    "local_base_image",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_LOCAL_BASE = "natroute-base:bookworm"
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
#: The service image targets of docker/Dockerfile (one runtime image, one CMD each).
SERVICE_TARGETS = ("runtime", "beacon", "registry", "sidecar")


class LabError(RuntimeError):
    """The lab could not be set up or a container misbehaved (message has its log)."""


def _unix_socket_answers(host: str) -> bool:
    """False when ``host`` is a unix socket nobody accepts on (other schemes: True)."""
    if not host.startswith("unix://"):
        return True
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2.0)
        try:
            sock.connect(host.removeprefix("unix://"))
        except OSError:
            return False
    return True


def engine_client(timeout: float = 30.0) -> docker.DockerClient | None:
    """A client for the local engine, or None when no engine answers.

    Args:
        timeout: seconds for each API call.

    Returns:
        A connected client (API version negotiated, 1.41 on this project's
        machines), or None.
    """
    if not _unix_socket_answers(os.environ.get("DOCKER_HOST", DEFAULT_DOCKER_HOST)):
        return None  # checked first: a failing from_env() leaks its socket
    try:
        client = docker.from_env(timeout=int(timeout))
    except docker.errors.DockerException:
        return None
    try:
        client.ping()
    except docker.errors.DockerException:
        client.close()
        return None
    return client


def local_base_image(client: docker.DockerClient) -> str | None:
    """The local base image to build from, when it exists.

    ``NATROUTE_BASE_IMAGE`` overrides the name (default ``natroute-base:bookworm``).

    Returns:
        The image name, or None when the engine does not have it (the Dockerfiles
        then use their public default and install from the package index).
    """
    name = os.environ.get("NATROUTE_BASE_IMAGE", DEFAULT_LOCAL_BASE)
    try:
        client.images.get(name)
    except docker.errors.ImageNotFound:
        return None
    return name


@dataclass(frozen=True)
class Images:
    """Tags of the built images."""

    runtime: str
    beacon: str
    registry: str
    sidecar: str
    router: str


def _build(client: docker.DockerClient, tag: str, path: Path, **kwargs: Any) -> float:
    start = time.monotonic()
    try:
        client.images.build(path=str(path), tag=tag, rm=True, forcerm=True, **kwargs)
    except docker.errors.BuildError as exc:
        log = "".join(str(chunk.get("stream", chunk.get("error", ""))) for chunk in exc.build_log)
        raise LabError(f"building {tag} failed: {exc}\n{log[-4000:]}") from exc
    return time.monotonic() - start


def default_tag() -> str:
    """The image tag of this checkout's e2e images: ``NATROUTE_E2E_TAG`` or ``e2e``.

    Several checkouts sharing one engine (parallel work trees) each set their own
    tag so that one checkout's build never replaces the images another is testing.
    """
    return os.environ.get("NATROUTE_E2E_TAG", "e2e")


def build_images(
    client: docker.DockerClient, *, tag: str | None = None, report: bool = False
) -> Images:
    """Build the service images and the router image.

    With the local base image present the builds are offline (``network_mode``
    none, wheels from ``docker/wheels``); without it they use the Dockerfiles'
    public defaults and the default build network, as on a user's machine.
    Unchanged sources hit the layer cache, so repeated calls are cheap.

    Args:
        client: the engine.
        tag: image tag, e.g. ``natroute-beacon:e2e`` (default: :func:`default_tag`).
        report: print each build's time and the image sizes.

    Returns:
        The image tags.

    Raises:
        LabError: a build failed, or the wheels for an offline build are missing.
    """
    tag = tag or default_tag()
    base = local_base_image(client)
    kwargs: dict[str, Any] = {}
    if base is not None:
        if not any((REPO_ROOT / "docker" / "wheels").glob("*.whl")):
            raise LabError(
                "docker/wheels has no wheels for the offline build: run .ci/docker-setup"
            )
        kwargs = {"buildargs": {"BASE_IMAGE": base}, "network_mode": "none"}
    elif os.environ.get("CI") == "true":
        raise LabError(
            "CI=true but the local base image "
            f"{os.environ.get('NATROUTE_BASE_IMAGE', DEFAULT_LOCAL_BASE)} is missing: "
            "run .ci/docker-setup"
        )
    tags: dict[str, str] = {}
    for target in SERVICE_TARGETS:
        tags[target] = f"natroute-{target}:{tag}"
        seconds = _build(
            client, tags[target], REPO_ROOT, dockerfile="docker/Dockerfile", target=target, **kwargs
        )
        if report:
            print(f"   built {tags[target]} in {seconds:.1f} s", flush=True)
    tags["router"] = f"natroute-router:{tag}"
    seconds = _build(client, tags["router"], REPO_ROOT / "docker" / "router", **kwargs)
    if report:
        print(f"   built {tags['router']} in {seconds:.1f} s", flush=True)
        for name in tags.values():
            size = client.images.get(name).attrs["Size"] / 1e6
            print(f"   {name}: {size:.0f} MB", flush=True)
    return Images(**tags)
