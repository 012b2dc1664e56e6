"""The bundled parent and worker images, built by the images role, checked inside real containers."""

from __future__ import annotations

import json
import re
import time

import pytest

from helpers import REPO_ROOT

FLAVOURS = {"minimal": "hal9000/worker:latest", "ultramin": "hal9000/worker:ultramin"}
HEARTBEAT = (
    "import urllib.request; "
    "print(urllib.request.urlopen('http://127.0.0.1:8000/api/v2/heartbeat', timeout=2).status)"
)


@pytest.fixture(scope="session")
def built_images(docker_client, tmp_path_factory):
    """Build (or find up to date) every bundled image through the role, twice."""
    from conftest import AnsibleRunner

    runner = AnsibleRunner(tmp_path_factory.mktemp("images"))
    extra = json.dumps({"images_worker_flavours": ["minimal", "ultramin"]})
    first = runner.playbook(REPO_ROOT / "playbooks" / "build_images.yml", "-e", extra)
    second = runner.playbook(REPO_ROOT / "playbooks" / "build_images.yml", "-e", extra)
    return first, second


def run_in(docker_client, image, command, **kwargs):
    return docker_client.containers.run(image, command, remove=True, **kwargs).decode().strip()


def test_second_build_changes_nothing(built_images):
    second = built_images[1]
    assert re.findall(r"changed=(\d+)", second.stdout.split("PLAY RECAP")[-1]) == ["0"]
    assert second.stdout.count("up to date") == 4  # parent, mcp, minimal, ultramin


@pytest.mark.parametrize("flavour,tag", FLAVOURS.items())
def test_worker_labels_user_and_claude(built_images, docker_client, flavour, tag):
    image = docker_client.images.get(tag)
    assert image.labels["io.hal9000.image"] == "worker"
    assert "io.hal9000.role" not in image.labels  # else every container of the image would pass for a worker
    assert image.labels["io.hal9000.flavour"] == flavour
    assert len(image.labels["io.hal9000.build-digest"]) == 64
    assert run_in(docker_client, tag, ["id", "-u"]) == "1001"
    assert run_in(docker_client, tag, ["sh", "-c", "echo $HOME $CLAUDE_HOME; pwd"]).split() == [
        "/home/claude", "/home/claude/.claude", "/workspace",
    ]
    assert re.match(r"^\d+\.\d+\.\d+ \(Claude Code\)", run_in(docker_client, tag, ["claude", "--version"]))


@pytest.mark.parametrize("flavour,tag", FLAVOURS.items())
def test_worker_has_no_node_npm_or_python(built_images, docker_client, flavour, tag):
    found = run_in(
        docker_client, tag,
        ["sh", "-c", "for p in node nodejs npm npx python python3 pip; do command -v $p || true; done"],
    )
    assert found == ""
    has_git = run_in(docker_client, tag, ["sh", "-c", "command -v git || echo none"])
    assert (has_git == "/usr/bin/git") == (flavour == "minimal")


def test_git_works_in_minimal(built_images, docker_client):
    out = run_in(
        docker_client, FLAVOURS["minimal"],
        ["sh", "-c", "cd /tmp && git init -q r && cd r && echo x > f && git add f && "
         "git -c user.name=t -c user.email=t@e commit -qm m && git log --format=%s"],
    )
    assert out == "m"


def test_worker_idles_under_tini_and_stops_cleanly(built_images, docker_client, prefix):
    container = docker_client.containers.run(FLAVOURS["ultramin"], detach=True, name=f"{prefix}-idle")
    try:
        time.sleep(1)
        container.reload()
        assert container.status == "running"
        assert container.exec_run(["cat", "/proc/1/comm"]).output.decode().strip() == "tini-static"
        # Idle: tini and one sleep, no entrypoint shell beside them (host memory per warm worker); sh, cat: this exec.
        listing = container.exec_run(["sh", "-c", "cat /proc/[0-9]*/comm"]).output.decode().split()
        assert sorted(name for name in listing if name not in ("sh", "cat")) == ["sleep", "tini-static"], listing
        container.stop(timeout=5)
        assert container.wait()["StatusCode"] == 0
    finally:
        container.remove(force=True, v=True)


def test_worker_runs_a_given_command(built_images, docker_client):
    assert run_in(docker_client, FLAVOURS["ultramin"], ["echo", "ran"]) == "ran"


def test_parent_image_contents(built_images, docker_client):
    tag = "hal9000/parent:latest"
    assert docker_client.images.get(tag).labels["io.hal9000.image"] == "parent"
    out = run_in(
        docker_client, tag,
        ["sh", "-c", "tmux -V && docker --version && python3 -c 'import docker, "
         "ansible_collections.hal9000.dind.plugins.module_utils.validate as v; print(v.validate_name(\"ok-name\"))'"],
        entrypoint=[],
    )
    assert "tmux" in out and "Docker version" in out and out.endswith("ok-name")


def wait_for_heartbeat(container, limit):
    started = time.monotonic()
    while time.monotonic() - started < limit:
        result = container.exec_run(["python3", "-c", HEARTBEAT])
        if result.exit_code == 0 and result.output.decode().strip() == "200":
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"no ChromaDB heartbeat within {limit} s:\n{container.logs().decode()[-2000:]}")


def test_parent_chromadb_answers_and_keeps_data(built_images, docker_client, prefix):
    volume = f"{prefix}-chroma-data"
    container = docker_client.containers.run(
        "hal9000/parent:latest", detach=True, name=f"{prefix}-parent-img",
        volumes={volume: {"bind": "/data/chromadb"}, "/var/run/docker.sock": {"bind": "/var/run/docker.sock"}},
        environment={"HAL9000_PARENT_NAME": f"{prefix}-parent-img", "SKIP_IMAGE_PULL": "true"},
    )
    create = (
        "import json, urllib.request; "
        "r = urllib.request.Request('http://127.0.0.1:8000/api/v2/tenants/default_tenant/databases/"
        "default_database/collections', data=json.dumps({'name': 'kept-collection'}).encode(), "
        "headers={'Content-Type': 'application/json'}); print(urllib.request.urlopen(r).status)"
    )
    listing = (
        "import json, urllib.request; print([c['name'] for c in json.load(urllib.request.urlopen("
        "'http://127.0.0.1:8000/api/v2/tenants/default_tenant/databases/default_database/collections'))])"
    )
    try:
        wait_for_heartbeat(container, 5)
        assert container.exec_run(["python3", "-c", create]).output.decode().strip() == "200"
        container.restart(timeout=10)
        wait_for_heartbeat(container, 5)
        assert "kept-collection" in container.exec_run(["python3", "-c", listing]).output.decode()
        container.stop(timeout=10)
        assert container.wait()["StatusCode"] == 0
    finally:
        container.remove(force=True, v=True)
        docker_client.volumes.get(volume).remove()


def test_shipped_context_drops_what_the_collection_no_longer_has(built_images, tmp_path):
    """The copy a remote Docker host gets (forced on localhost here): complete, stale files removed, then stable."""
    from conftest import AnsibleRunner

    runner = AnsibleRunner(tmp_path)
    context = tmp_path / "build-context"
    stale = [context / "plugins" / "module_utils" / "dropped.py", context / "images" / "parent" / "old.sh"]
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("from an older release\n")
    extra = json.dumps({"images_ship_context": True, "images_context_dir": str(context)})
    first = runner.playbook(REPO_ROOT / "playbooks" / "build_images.yml", "-e", extra)
    assert not any(path.exists() for path in stale), first.stdout
    for source in ("images/Dockerfile.parent", "plugins/module_utils/pool.py", ".dockerignore"):
        assert (context / source).read_bytes() == (REPO_ROOT / source).read_bytes(), source
    # Same build inputs as the collection's own directory: the images are found up to date.
    assert first.stdout.count("up to date") == 3, first.stdout  # parent, mcp, minimal

    second = runner.playbook(REPO_ROOT / "playbooks" / "build_images.yml", "-e", extra)
    assert re.findall(r"changed=(\d+)", second.stdout.split("PLAY RECAP")[-1]) == ["0"], second.stdout
