"""The parent's worker-image check at start-up (the seed's SKIP_IMAGE_PULL and LAZY_IMAGE_PULL), for real.

WORKER_IMAGE names an image in a registry of the test's own on 127.0.0.1 (Debian's docker-registry, no
authentication: the parent pulls without credentials). Each test starts a parent of its own with the parent
module and reads what it did: the engine's images, logs/parent.log and logs/image-pull.log in its home.
"""

from __future__ import annotations

import shutil
import uuid

import docker
import pytest

from helpers import AnsibleRunner, Parent, parent_args, remove_installation, succeeded, wait_for
from test_image_pull import remove_images, running_registry


@pytest.fixture(scope="module")
def registry(docker_client):
    """A registry without authentication holding one small image: its name there, and one never pushed."""
    base = f"h9wpull-{uuid.uuid4().hex[:8]}"
    with running_registry(docker_client, base, f"{base}/worker:pull", with_auth=False) as (_container, remote, _id):
        yield {"remote": remote, "missing": f"{remote.split('/', 1)[0]}/{base}/worker:never-pushed"}


@pytest.fixture
def start(docker_client, registry, prefix, tmp_path):
    """start(**settings): a parent of the test's own on WORKER_IMAGE=the registry's image; removed with its home after."""
    base = f"{prefix}-wpull-{uuid.uuid4().hex[:4]}"
    parent = Parent(docker_client, AnsibleRunner(tmp_path), parent_args(base, tmp_path / "home", enable_mcp_relay=False))

    def started(**settings):
        parent.args.update({"worker_image": registry["remote"], **settings})
        result = succeeded(parent.runner.task("hal9000.dind.parent", parent.args))
        assert result["parent"]["chromadb_ready"] is True, result
        return parent

    yield started
    remove_installation(docker_client, base, parent.name)
    remove_images(docker_client, registry["remote"])
    shutil.rmtree(parent.home, ignore_errors=True)


def log(parent, name):
    path = parent.home / "logs" / name
    return path.read_text() if path.exists() else ""


def present(client, name):
    try:
        return client.images.get(name).id
    except docker.errors.ImageNotFound:
        return None


def test_a_missing_worker_image_is_pulled_before_the_parent_is_ready(docker_client, registry, start):
    remove_images(docker_client, registry["remote"])
    parent = start()
    assert present(docker_client, registry["remote"]), "the parent was ready before its worker image was there"
    assert f"Worker image {registry['remote']} pulled" in log(parent, "parent.log")
    assert log(parent, "image-pull.log").splitlines()[-1] == "done"


def test_lazy_image_pull_pulls_in_the_background(docker_client, registry, start):
    remove_images(docker_client, registry["remote"])
    parent = start(lazy_image_pull=True)
    assert f"Worker image {registry['remote']} missing: pulling in the background" in log(parent, "parent.log")
    wait_for(lambda: present(docker_client, registry["remote"]), 60, "the background pull")
    wait_for(lambda: log(parent, "image-pull.log").endswith("done\n"), 10, "the pull's log")


def test_skip_image_pull_never_pulls_and_says_workers_cannot_start(docker_client, registry, start):
    remove_images(docker_client, registry["remote"])
    parent = start(skip_image_pull=True)
    assert f"WARNING: worker image {registry['remote']} is missing and SKIP_IMAGE_PULL is set" in log(parent, "parent.log")
    assert not present(docker_client, registry["remote"]) and log(parent, "image-pull.log") == ""


def test_a_failed_pull_is_one_error_line_and_the_parent_serves_on(docker_client, registry, start):
    parent = start(worker_image=registry["missing"])
    errors = [line for line in log(parent, "parent.log").splitlines() if "ERROR: pulling worker image" in line]
    assert len(errors) == 1 and registry["missing"] in errors[0] and "Build it with playbooks/build_images.yml" in errors[0], errors
    assert log(parent, "image-pull.log").splitlines()[-1].startswith("failed: ")
