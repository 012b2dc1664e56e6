"""hal9000.dind.image source=pull from a real private registry (Debian's docker-registry, htpasswd auth).

The registry runs on 127.0.0.1, which Docker lets speak plain HTTP; its image is built here from Debian's
package under a private tag (the classic builder's cache keeps the apt layer for the next run).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import docker
import pytest

MODULE = "hal9000.dind.image"
USER = "h9pull"
PASSWORD = f"Pw-{uuid.uuid4().hex}"
REGISTRY_DOCKERFILE = b"""FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends docker-registry apache2-utils \\
 && rm -rf /var/lib/apt/lists/*
LABEL io.hal9000.test=registry
"""
# htpasswd's bcrypt line is made at start: no password in the image.
REGISTRY_START = 'htpasswd -Bbn "$REGISTRY_USER" "$REGISTRY_PASSWORD" > /tmp/htpasswd && exec docker-registry serve /etc/docker/registry/config.yml'
# Debian's config.yml asks for htpasswd credentials: an open registry gets a configuration without that section.
REGISTRY_OPEN = ("printf 'version: 0.1\\nstorage:\\n  filesystem:\\n    rootdirectory: /var/lib/docker-registry\\nhttp:\\n  addr: :5000\\n'"
                 " > /tmp/open.yml && exec docker-registry serve /tmp/open.yml")
DOCKER_CONFIG = Path.home() / ".docker" / "config.json"


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_registry(port, with_auth):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)  # noqa: S310 (a local test URL)
            if not with_auth:
                return
        except urllib.error.HTTPError as exc:
            if exc.code == 401 and with_auth:  # up, and asking for credentials
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"the test registry on 127.0.0.1:{port} did not answer")


def remove_images(client, *names):
    for name in names:
        try:
            client.images.remove(name, noprune=True)  # noprune: the registry image's apt layer is the next run's cache
        except docker.errors.NotFound:
            pass


@contextlib.contextmanager
def running_registry(client, base, remote_path, with_auth=True):
    """A registry on a free 127.0.0.1 port holding one small image at ``remote_path`` (repository:tag), which is not on
    the engine any more: (the registry's container, the image's full name, its ID). Removed afterwards, with its image.

    ``with_auth``: htpasswd authentication as USER/PASSWORD; else anyone may pull.
    """
    registry_image = f"{base}/registry:test"
    port = free_port()
    remote = f"127.0.0.1:{port}/{remote_path}"
    container = None
    auth = {"REGISTRY_USER": USER, "REGISTRY_PASSWORD": PASSWORD, "REGISTRY_AUTH_HTPASSWD_REALM": base,
            "REGISTRY_AUTH_HTPASSWD_PATH": "/tmp/htpasswd"}
    try:
        client.images.build(fileobj=io.BytesIO(REGISTRY_DOCKERFILE), tag=registry_image, rm=True, forcerm=True)
        container = client.containers.run(
            registry_image, ["sh", "-c", REGISTRY_START if with_auth else REGISTRY_OPEN],
            name=f"{base}-registry", detach=True, ports={"5000/tcp": ("127.0.0.1", port)}, environment=auth if with_auth else {},
        )
        wait_for_registry(port, with_auth)
        small = client.images.build(fileobj=io.BytesIO(f"FROM debian:bookworm-slim\nLABEL io.hal9000.test={base}\n".encode()),
                                    tag=remote, rm=True)[0]
        repository, tag = remote.rsplit(":", 1)
        for chunk in client.api.push(repository, tag=tag, stream=True, decode=True,
                                     auth_config={"username": USER, "password": PASSWORD} if with_auth else None):
            assert "error" not in chunk, chunk
        remove_images(client, remote)
        yield container, remote, small.id
    finally:
        if container is not None:
            container.remove(force=True, v=True)
        remove_images(client, remote, registry_image)


@pytest.fixture(scope="module")
def registry(docker_client):
    """A running registry with one pushed image (not on the engine any more); everything removed afterwards."""
    base = f"h9pull-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    with running_registry(docker_client, base, f"{base}/small:1") as (container, remote, small_id):
        print(f"registry ready in {time.monotonic() - started:.1f} s")
        container.reload()  # its address on the default bridge, for the test fleet's engines
        yield {"base": base, "registry": remote.split("/", 1)[0], "remote": remote, "id": small_id,
               "bridge_address": f"{container.attrs['NetworkSettings']['IPAddress']}:5000"}


@pytest.fixture
def pulled(docker_client, registry):
    """The local names a test pulls to; none exists before the test, and none after it."""
    names = [registry["remote"], f"{registry['base']}/small:local"]
    remove_images(docker_client, *names)
    yield names
    remove_images(docker_client, *names)


def write_auth(tmp_path, password=PASSWORD, mode=0o600, name="auth.json", **extra):
    path = tmp_path / name
    path.write_text(json.dumps({"username": USER, "password": password, **extra}))
    path.chmod(mode)
    return str(path)


def present(client, name):
    try:
        return client.images.get(name).id
    except docker.errors.ImageNotFound:
        return None


def docker_config():
    return DOCKER_CONFIG.read_bytes() if DOCKER_CONFIG.exists() else None


def test_check_mode_says_it_would_pull_and_pulls_nothing(ansible, docker_client, registry, pulled, tmp_path):
    auth = write_auth(tmp_path, registry=registry["registry"])
    checked = ansible.task(MODULE, {"name": registry["remote"], "source": "pull", "registry_auth_file": auth},
                           check_mode=True, diff=True)
    assert checked["changed"] is True and checked["actions"] == [f"pulled {registry['remote']}"], checked
    assert checked["diff"]["before"] == {} and checked["diff"]["after"]["id"] == "(to be pulled)"
    assert present(docker_client, registry["remote"]) is None


def test_pull_with_credentials_then_nothing_to_do(ansible, docker_client, registry, pulled, tmp_path):
    config_before = docker_config()
    auth = write_auth(tmp_path, registry=registry["registry"])
    local = pulled[1]
    args = {"name": local, "source": "pull", "pull_from": registry["remote"], "registry_auth_file": auth}
    first, again, forced = ansible.tasks([(MODULE, args), (MODULE, args), (MODULE, {**args, "force": True})])
    assert first.get("failed") is not True and first["changed"] is True, first
    assert first["actions"] == [f"pulled {registry['remote']} and tagged it {local}"]
    assert first["image"]["id"] == registry["id"] == present(docker_client, local) == present(docker_client, registry["remote"])
    assert again["changed"] is False and again["actions"] == [], again
    assert forced["changed"] is False and forced["image"]["id"] == registry["id"], forced  # same image ID: no change
    assert PASSWORD not in first["_stdout"] and PASSWORD not in json.dumps([first, again, forced])
    assert docker_config() == config_before  # nothing written for later pulls: the credentials went with each pull


def test_refusals_are_one_line_and_never_show_the_password(ansible, docker_client, registry, pulled, tmp_path):
    wrong = f"Wrong-{uuid.uuid4().hex}"
    pull = {"name": registry["remote"], "source": "pull"}
    readable = write_auth(tmp_path, mode=0o644, name="readable.json")
    results = ansible.tasks([
        (MODULE, {**pull, "registry_auth_file": write_auth(tmp_path, password=wrong, name="wrong.json")}),
        (MODULE, {**pull, "registry_auth_file": readable}),
        (MODULE, {**pull, "registry_auth_file": str(tmp_path / "missing.json")}),
        (MODULE, pull),
    ])
    for result in results:
        assert result["failed"] is True and "\n" not in result["msg"] and registry["registry"] in result["msg"], result
    refused, readable_refused, missing, anonymous = (result["msg"] for result in results)
    assert refused.startswith(f"Registry {registry['registry']} refused the credentials of {USER} in "), refused
    assert "has mode 0644" in readable_refused and f"chmod 600 {readable}" in readable_refused
    assert "does not exist" in missing
    assert anonymous.startswith(f"Registry {registry['registry']} wants credentials"), anonymous
    output = results[0]["_stdout"] + json.dumps(results)
    assert wrong not in output and PASSWORD not in output
    assert present(docker_client, registry["remote"]) is None
    assert os.stat(readable).st_mode & 0o777 == 0o644  # refused, not "fixed" behind the user's back


def test_images_role_pulls_on_each_host_in_check_mode(ansible, registry, tmp_path):
    """The role's wiring, in check mode only: a real run would retag hal9000/* images other tests use."""
    out = tmp_path / "pulled.json"
    play = [{"hosts": "localhost", "gather_facts": False, "tasks": [
        {"ansible.builtin.include_role": {"name": "hal9000.dind.images"}, "vars": {
            "images_source": "pull", "images_registry": f"{registry['registry']}/{registry['base']}/",
            "images_registry_auth_file": write_auth(tmp_path), "images_parent": False, "images_mcp": False,
            "images_worker_flavours": ["ultramin"], "images_force": True}},
        {"ansible.builtin.copy": {"content": "{{ __images_pulled | to_json }}", "dest": str(out), "mode": "0600"},
         "check_mode": False},
    ]}]
    book = tmp_path / "role.yml"
    book.write_text(json.dumps(play))
    proc = ansible.playbook(book, "--check")
    (result,) = json.loads(out.read_text())["results"]
    source = f"{registry['registry']}/{registry['base']}/hal9000/worker:ultramin"
    assert result["changed"] is True and result["actions"] == [f"pulled {source} and tagged it hal9000/worker:ultramin"], result
    assert "Build the images]" in proc.stdout and "Ship the build context" not in proc.stdout  # skipped: no build
    assert PASSWORD not in proc.stdout
