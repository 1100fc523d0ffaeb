"""Fixtures of the docker end-to-end suite: engine, images, labs.

Without an engine the suite skips with the reason; under ``CI=true`` a missing
engine (or base image) fails it instead, so CI cannot go green by skipping.
"""

from __future__ import annotations

from collections.abc import Iterator

import docker
import pytest

from tests.ci import missing

from .engine import Images, LabError, build_images, engine_client
from .lab import Lab

__all__ = ["docker_client", "images"]


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    """The local engine; skips (fails under CI=true) when none answers."""
    client = engine_client()
    if client is None:
        reason = "no Docker engine answers (run .ci/docker-setup to install and start one)"
        missing(reason)
    yield client
    client.close()


@pytest.fixture(scope="session")
def images(docker_client: docker.DockerClient) -> Images:
    """The project's images, built once per session (layer cache makes it cheap)."""
    try:
        return build_images(docker_client)
    except LabError as exc:
        pytest.fail(str(exc))


@pytest.fixture
def lab(docker_client: docker.DockerClient) -> Iterator[Lab]:
    """A lab removed after the test, whatever the outcome."""
    with Lab(docker_client) as created:
        yield created
