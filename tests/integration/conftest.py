"""Integration fixtures: a real Docker Engine and real ansible-playbook runs.

Nothing here stands in for Docker. Every object a test creates carries the
session's unique prefix and is removed at the end, whatever happened.
"""

from __future__ import annotations

import uuid

import docker
import pytest

from helpers import AnsibleRunner, remove_containers, remove_installation


@pytest.fixture(scope="session")
def docker_client():
    """The real engine; the suite fails (never skips) when none answers."""
    client = docker.from_env()
    try:
        client.ping()
    except Exception as exc:  # any failure to reach it is fatal for the suite
        pytest.fail(f"No Docker Engine answers ({exc}); run scripts/quickstart.sh --engine-only first.")
    return client


@pytest.fixture(scope="session")
def prefix(docker_client):
    """A unique name prefix; everything left with it is removed at the end."""
    value = f"h9test-{uuid.uuid4().hex[:8]}"
    yield value
    remove_installation(docker_client, value)


@pytest.fixture
def ansible(tmp_path):
    return AnsibleRunner(tmp_path)


@pytest.fixture
def made(docker_client):
    """Names of workers a test makes; removed (with their anonymous volumes) afterwards."""
    names = []
    yield names
    remove_containers(docker_client, *names)
