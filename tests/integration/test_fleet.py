"""A fleet of three real Docker Engines (tests/fleet/nodes.py): images built once, distributed, and one status.

The nodes are containers running their own dockerd, reached by Ansible over ssh as ordinary inventory hosts.
Only loopback and the nodes' addresses are contacted: the build host (node1) is seeded with the base image
and a parent image built here from the same build inputs, so its build finds that digest and needs no
network; node2 and node3 start empty and must get everything from node1.

The playbooks run from a snapshot of the collection taken at the start (others edit the working tree while
tests run; a changed file between the seed and the run would make node1 rebuild).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import docker
import pytest

from helpers import BIN, REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "tests" / "fleet"))
from nodes import fleet  # noqa: E402  (tests/fleet is not a package)

BASE = "debian:bookworm-slim"
PARENT = "hal9000/parent:latest"
# Only what the parent needs: no MCP sidecar, no worker flavour (a worker image is ~500 MB per node).
IMAGES_ONLY = {"hal9000_hosts": "fleet", "images_mcp": False, "images_worker_flavours": []}


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    """A copy of the working tree as the hal9000.dind collection (what git would commit, tracked or new)."""
    root = tmp_path_factory.mktemp("collection")
    tree = root / "ansible_collections" / "hal9000" / "dind"
    tree.mkdir(parents=True)
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO_ROOT, check=True,
                           capture_output=True, text=True).stdout.split()
    files = [f for f in files if not f.startswith(".ansible/") and (REPO_ROOT / f).is_file()]
    subprocess.run(["tar", "-cf", root / "tree.tar", "-C", REPO_ROOT, *files], check=True)
    subprocess.run(["tar", "-xf", root / "tree.tar", "-C", tree], check=True)
    return tree


@pytest.fixture(scope="module")
def nodes(collection, tmp_path_factory):
    """Three nodes; node1 (the build host) holds the base image and a parent image with the collection's digest."""
    client = docker.from_env()
    with fleet(3, client=client) as started:
        seed = f"{started.prefix}/parent:seed"
        try:
            result = play(collection, tmp_path_factory.mktemp("seed"), [{
                "hosts": "localhost", "gather_facts": False,
                "tasks": [{"hal9000.dind.image": {"name": seed, "flavour": "parent", "context": str(collection),
                                                  "extra_ca_dir": "/usr/local/share/ca-certificates"}}],
            }], inventory=REPO_ROOT / "inventory" / "localhost.yml")
            assert result["stats"]["localhost"]["failures"] == 0, result
            started.load(started[0], BASE, seed)
        finally:
            try:
                client.api.remove_image(seed)
            except docker.errors.APIError:
                pass  # never built
        started.inventory_path = started.write_inventory(tmp_path_factory.mktemp("inventory") / "fleet.json")
        yield started


def play(collection, workdir, playbook, inventory, extra_vars=None, check=False):
    """Run a playbook (a path, or a list of plays) from the collection snapshot; the JSON callback's result."""
    workdir = Path(workdir)
    if not isinstance(playbook, (str, Path)):
        path = workdir / f"play-{time.monotonic_ns()}.yml"
        path.write_text(json.dumps(playbook))
        playbook = path
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(collection.parents[2]), ANSIBLE_STDOUT_CALLBACK="fleet_json",
               ANSIBLE_CALLBACK_PLUGINS=str(REPO_ROOT / "tests" / "fleet" / "callback_plugins"),
               ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="0", ANSIBLE_HOST_KEY_CHECKING="0")
    cmd = [str(BIN / "ansible-playbook"), "-i", str(inventory), str(playbook), "-e", json.dumps(extra_vars or {})]
    if check:
        cmd.append("--check")
    proc = subprocess.run(cmd, cwd=collection, env=env, capture_output=True, text=True, check=False)
    try:
        result = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(f"{' '.join(cmd)} printed no JSON:\n{proc.stdout}\n{proc.stderr}") from None
    result["rc"] = proc.returncode
    return result


def task_results(result, name):
    """host -> result of the (last) task whose name ends with ``name``."""
    found = {}
    for each in result["plays"]:
        for task in each["tasks"]:
            if task["task"]["name"].endswith(name):
                found = task["hosts"]
    return found


def events(node, since_ns, until):
    """The engine's events from ``since_ns`` (nanoseconds) to ``until`` (seconds)."""
    with contextlib.closing(node.client()) as client:
        found = client.events(since=since_ns // 10**9 - 1, until=until, decode=True)
        return [event for event in found if event["timeNano"] >= since_ns]


def image_id(node, name):
    with contextlib.closing(node.client()) as client:
        try:
            return client.api.inspect_image(name)["Id"]
        except docker.errors.NotFound:
            return None


def run_images(nodes, collection, tmp_path, check=False):
    """The images part of site.yml across the fleet; the result and each node's engine events during it."""
    since = time.time_ns()
    result = play(collection, tmp_path, collection / "playbooks" / "build_images.yml", nodes.inventory_path,
                  IMAGES_ONLY, check=check)
    until = int(time.time()) + 1
    assert result["rc"] == 0, json.dumps(result["stats"]) + json.dumps(task_results(result, "could not be copied"))
    return result, {node.name: events(node, since, until) for node in nodes}


def test_images_are_built_once_and_copied_only_where_they_differ(nodes, collection, tmp_path):
    build_host, others = nodes[0], nodes[1:]
    result, seen = run_images(nodes, collection, tmp_path)

    # Only the build host ran the build; the others never built (a build makes containers) nor pulled.
    built = task_results(result, "Build the images")
    assert not built[build_host.name].get("skipped"), built[build_host.name]
    for node in others:
        assert built[node.name].get("skipped"), built[node.name]
        kinds = {(e["Type"], e["Action"]) for e in seen[node.name]}
        assert not [kind for kind in kinds if kind[0] == "container"], kinds
        assert ("image", "load") in kinds and ("image", "pull") not in kinds, kinds
    assert not [e for e in seen[build_host.name] if e["Action"] == "load"]

    # Every host now has the build host's images, the base image included.
    for name in (BASE, PARENT):
        wanted = image_id(build_host, name)
        assert wanted and all(image_id(node, name) == wanted for node in others), name
    copied = task_results(result, "Copy the images from the build host to the hosts whose images differ")
    hosts = next(iter(copied.values()))["hosts"]
    assert sorted(hosts) == sorted(node.name for node in others)
    for node in others:
        assert sorted(hosts[node.name]["sent"]) == [BASE, PARENT] and hosts[node.name]["bytes"] > 100_000_000

    # A second run: nothing built, nothing sent, nothing changed.
    again, seen = run_images(nodes, collection, tmp_path)
    assert all(stats["changed"] == 0 for stats in again["stats"].values()), again["stats"]
    assert not [e for events_ in seen.values() for e in events_ if e["Action"] in ("load", "create", "tag")]
    hosts = next(iter(task_results(again, "hosts whose images differ").values()))["hosts"]
    assert all(outcome["sent"] == [] and outcome["bytes"] == 0 for outcome in hosts.values()), hosts

    # One host loses the parent image: check mode says only that host would receive it, and sends nothing.
    with contextlib.closing(others[1].client()) as client:
        client.api.remove_image(PARENT)
    checked, seen = run_images(nodes, collection, tmp_path, check=True)
    messages = next(iter(task_results(checked, "hosts whose images differ").values()))["messages"]
    assert f"{others[0].name}: current" in messages
    assert f"{others[1].name}: would receive {PARENT}" in messages
    assert image_id(others[1], PARENT) is None
    assert not [e for events_ in seen.values() for e in events_ if e["Action"] == "load"]

    # The real run sends it to that host alone.
    seen = run_images(nodes, collection, tmp_path)[1]
    assert image_id(others[1], PARENT) == image_id(build_host, PARENT)
    assert [e for e in seen[others[1].name] if e["Action"] == "load"]
    assert not [e for e in seen[others[0].name] if e["Action"] == "load"]


def fleet_status(nodes, collection, tmp_path, fleet_format):
    dest = tmp_path / f"status.{fleet_format}"
    result = play(collection, tmp_path, collection / "playbooks" / "fleet_status.yml", nodes.inventory_path,
                  {"hal9000_hosts": "fleet", "fleet_format": fleet_format, "fleet_status_dest": str(dest)})
    assert result["rc"] == 0, result["stats"]
    return dest.read_text()


def test_fleet_status_lists_every_host_and_says_which_is_unreachable(nodes, collection, tmp_path):
    rows = {row["host"]: row for row in json.loads(fleet_status(nodes, collection, tmp_path, "json"))}
    assert sorted(rows) == sorted(node.name for node in nodes)
    parent_id = image_id(nodes[0], PARENT)
    for row in rows.values():
        assert row["reachable"] and not row["error"], row
        assert row["engine"].startswith("20.10"), row
        assert row["images"][PARENT] == parent_id
        assert row["parent"]["state"] == "absent"
        assert row["workers"] == {"claimed": 0, "warm": 0}
        assert row["memory_available_mb"] > 0 and row["disk_free_gb"] >= 0
        assert set(row["volumes"]) == {"hal9000-chromadb", "hal9000-memorybank", "hal9000-plugins"}

    stopped = nodes[2]
    nodes.stop(stopped)
    try:
        rows = {row["host"]: row for row in json.loads(fleet_status(nodes, collection, tmp_path, "json"))}
        assert not rows[stopped.name]["reachable"] and "unreachable" in rows[stopped.name]["error"]
        assert rows[stopped.name]["engine"] is None
        for node in nodes[:2]:
            assert rows[node.name]["reachable"] and rows[node.name]["engine"].startswith("20.10")
        table = fleet_status(nodes, collection, tmp_path, "table").splitlines()
        assert table[0].split()[:3] == ["HOST", "ENGINE", "PARENT"]
        assert sorted(line.split()[0] for line in table[1:]) == sorted(rows)
        assert next(line for line in table if line.startswith(stopped.name)).split()[1:3] == ["-", "UNREACHABLE"]
        assert all(f" {parent_id[7:19]}" in line or f"={parent_id[7:19]}" in line for line in table[1:] if not line.startswith(stopped.name))
    finally:
        nodes.start(stopped)


def test_a_host_whose_engine_cannot_be_reached_fails_alone_and_by_name(nodes, collection, tmp_path):
    source, target = nodes[0], nodes[1]
    with contextlib.closing(target.client()) as client:
        client.api.remove_image(BASE)
    task = {"hal9000.dind.image_distribute": {
        "docker_host": source.docker_host, "images": [BASE, PARENT],
        "targets": [{"name": target.name, "docker_host": target.docker_host},
                    {"name": "gone", "docker_host": f"unix://{tmp_path}/no-engine.sock"}],
    }, "register": "copied", "ignore_errors": True}
    result = play(collection, tmp_path, [{"hosts": "localhost", "gather_facts": False, "tasks": [task]}],
                  REPO_ROOT / "inventory" / "localhost.yml")
    copied = task_results(result, "image_distribute")["localhost"]
    assert copied["failed"] and copied["msg"].startswith("Could not bring gone up to date (gone: Cannot reach the Docker Engine at unix://")
    assert copied["hosts"][target.name]["sent"] == [BASE] and "error" not in copied["hosts"][target.name]
    assert image_id(target, BASE) == image_id(source, BASE)
