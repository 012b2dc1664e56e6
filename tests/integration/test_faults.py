"""Faults injected for real into an installation, and what must hold after each.

The installation runs in a test node (tests/fleet/nodes.py): a container with its own dockerd, network
namespace and storage, reached by Ansible over ssh. That is what lets dockerd itself be restarted here,
with live-restore off and on, without touching this machine's engine. The node gets the parent and worker
images from this machine's engine and installs as a user would: the parent module, then the pool module.

After each fault: no byte lost in the volumes or the home (manifests of files written before, compared
after), ChromaDB still serves what it held, the parent healthy again (or saying why not), a claim succeeds
within its timeout, and a re-run of the same play completes without changing anything.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys

import docker
import pytest

from helpers import REPO_ROOT, wait_for

sys.path.insert(0, str(REPO_ROOT / "tests" / "fleet"))
from nodes import fleet  # noqa: E402  (tests/fleet is not a package)
from plays import collection_snapshot, play  # noqa: E402

# CI uses the images it just built; HAL9000_TEST_PARENT_IMAGE tries a parent built under another tag.
PARENT_SOURCE = os.environ.get("HAL9000_TEST_PARENT_IMAGE", "hal9000/parent:latest")
PARENT_IMAGE, WORKER_IMAGE = "hal9000/parent:latest", "hal9000/worker:latest"
PARENT = "hal9000-parent"
HOME = "/root/.hal9000"  # the default home, on the node
WARM = 2
CLAIM_TIMEOUT_MS = 2000  # CLAIM_TIMEOUT's default
# What the tests write before a fault and compare after: a volume and the home, in the parent's view.
KEPT_DIRS = ("/data/membank/fault-check", f"{HOME}/fault-check")
SEED = """
import os, sys
for top in sys.argv[1:]:
    for index in range(40):
        path = os.path.join(top, f"d{index % 5}", f"f{index}")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(os.urandom(1000 + index * 997))
"""
MANIFEST = """
import hashlib, json, os, sys
found = {}
for top in sys.argv[1:]:
    for root, _dirs, files in os.walk(top):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as handle:
                found[path] = hashlib.sha256(handle.read()).hexdigest()
print(json.dumps(found, sort_keys=True))
"""
# A record with its own embedding, through ChromaDB's HTTP API (the default embedding function would download a model).
CHROMA = """
import json, sys, urllib.request
base = "http://127.0.0.1:8000/api/v2/tenants/default_tenant/databases/default_database/collections"
def call(url, body=None):
    request = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)
if sys.argv[1] == "write":
    made = call(base, {"name": "fault-check", "get_or_create": True})
    call(f"{base}/{made['id']}/upsert", {"ids": ["kept"], "embeddings": [[0.1, 0.2, 0.3]],
                                         "documents": ["written before the fault"]})
collection = call(f"{base}/fault-check")
print(json.dumps(call(f"{base}/{collection['id']}/get", {"ids": ["kept"], "include": ["documents"]})["documents"]))
"""
CONVERGE = [{
    "hosts": "fleet", "gather_facts": False,
    "tasks": [
        {"name": "Config directory", "ansible.builtin.file": {"path": f"{HOME}/config", "state": "directory", "mode": "0700"}},
        # No MCP sidecar: its image is not on the node, and no fault here concerns it.
        {"name": "Settings", "ansible.builtin.copy": {"dest": f"{HOME}/config/hal9000.conf", "mode": "0600",
                                                      "content": "ENABLE_MCP_RELAY=false\n"}},
        {"name": "Parent", "hal9000.dind.parent": {"image": PARENT_IMAGE}},
        {"name": "Pool", "hal9000.dind.pool": {"min_warm_workers": WARM, "max_warm_workers": WARM}},
    ],
}]


class Installation:
    """The node, its engine, and the installation on it."""

    def __init__(self, nodes, collection, workdir):
        self.nodes, self.node, self.collection, self.workdir = nodes, nodes[0], collection, workdir
        self.inventory = nodes.write_inventory(workdir / "inventory.json")
        self.claims = 0

    @contextlib.contextmanager
    def engine(self):
        client = self.node.client(timeout=60)
        try:
            yield client
        finally:
            client.close()

    def converge(self):
        result = play(self.collection, self.workdir, CONVERGE, self.inventory)
        stats = result["stats"][self.node.name]
        assert result["rc"] == 0 and stats["failures"] == 0 and stats["unreachable"] == 0, json.dumps(result)[-3000:]
        return stats

    def run(self, *command, container=PARENT):
        with self.engine() as client:
            created = client.api.exec_create(container, list(command))
            output = client.api.exec_start(created["Id"]).decode("utf-8", "replace")
            return client.api.exec_inspect(created["Id"])["ExitCode"], output

    def ok(self, *command):
        code, output = self.run(*command)
        assert code == 0, (command, output)
        return output

    def manifest(self):
        return json.loads(self.ok("python3", "-c", MANIFEST, *KEPT_DIRS))

    def chroma(self, action="read"):
        return json.loads(self.ok("python3", "-c", CHROMA, action).strip().splitlines()[-1])

    def parent(self):
        with self.engine() as client:
            return client.api.inspect_container(PARENT)

    def warm(self):
        with self.engine() as client:
            parent = client.api.inspect_container(PARENT)
            found = client.api.containers(filters={"label": [f"io.hal9000.parent={PARENT}", "io.hal9000.pool"],
                                                   "status": "running"})
        return [c for c in found if c["Labels"].get("io.hal9000.warm-name") == c["Names"][0].lstrip("/")
                and c["Labels"].get("io.hal9000.parent-started") == parent["State"]["StartedAt"]]

    def healthy(self, timeout=90):
        def answer():
            state = self.parent()["State"]
            return state["Running"] and (state.get("Health") or {}).get("Status") == "healthy" and state
        return wait_for(answer, timeout, "the parent to be healthy")

    def claim(self, keep=False):
        """A claim from the refilled pool: warm, within the claim timeout; the worker's name."""
        wait_for(lambda: len(self.warm()) == WARM, 90, f"{WARM} warm workers of the parent as it runs now")
        self.claims += 1
        name = f"fault-claim-{self.claims}"
        claimed = json.loads(self.ok("coordinator", "claim", name, "--json"))
        # Its own time, not the exec's (a busy host starts the coordinator's Python slowly): within CLAIM_TIMEOUT.
        assert claimed["name"] == name and claimed["claimed"] is True and claimed["ms"] < CLAIM_TIMEOUT_MS, claimed
        code, output = self.run("sh", "-c", "id -u && test -w /workspace", container=name)
        assert code == 0 and output.split()[0] != "0", output
        if not keep:
            with self.engine() as client:
                client.api.remove_container(name, force=True, v=True)
        return name

    def node_command(self, *command):
        """A command in the node container itself (the engine's host), not in its engine; its output."""
        api = self.nodes.client.api
        created = api.exec_create(self.node.name, list(command))
        output = api.exec_start(created["Id"]).decode()
        assert api.exec_inspect(created["Id"])["ExitCode"] == 0, (command, output)
        return output

    def restart_engine(self, live_restore):
        """Restart the node's dockerd alone (the node's entrypoint starts it again), live-restore as given.

        live-restore is set first with a reload (SIGHUP): a daemon stopping acts on what it runs with, not on
        what its file says for the next one.
        """
        def engine_runs_with_it():
            try:
                with self.engine() as client:
                    return client.info()["LiveRestoreEnabled"] is live_restore
            except (docker.errors.DockerException, OSError):
                return False

        config = json.dumps({"live-restore": live_restore})
        node = self.node_command
        node("sh", "-c", f"mkdir -p /etc/docker && echo '{config}' > /etc/docker/daemon.json")
        node("pkill", "-HUP", "-x", "dockerd")
        wait_for(engine_runs_with_it, 30, "the node's dockerd to reload its configuration")
        old = node("pgrep", "-x", "dockerd")
        node("pkill", "-TERM", "-x", "dockerd")
        wait_for(lambda: node("sh", "-c", "pgrep -x dockerd || true") not in ("", old), 60, "a new dockerd in the node")
        wait_for(engine_runs_with_it, 60, "the node's dockerd to answer again")

    def holds(self, kept):
        """What every fault must leave: data, health, claims, and a play that changes nothing."""
        self.healthy()
        assert self.manifest() == kept, "files in the volumes or the home changed"
        assert self.chroma() == ["written before the fault"]
        self.claim()
        stats = self.converge()
        assert stats["changed"] == 0, stats


@pytest.fixture(scope="module")
def installed(docker_client, tmp_path_factory):
    collection = collection_snapshot(tmp_path_factory.mktemp("collection"))
    with fleet(1, client=docker_client) as nodes:
        nodes.load(nodes[0], PARENT_SOURCE, WORKER_IMAGE)
        if PARENT_SOURCE != PARENT_IMAGE:
            with contextlib.closing(nodes[0].client()) as client:
                client.api.tag(PARENT_SOURCE, *PARENT_IMAGE.split(":"))
        installation = Installation(nodes, collection, tmp_path_factory.mktemp("faults"))
        installation.converge()
        installation.ok("python3", "-c", SEED, *KEPT_DIRS)
        installation.chroma("write")
        yield installation


@pytest.fixture
def kept(installed):
    """The manifest before the fault (and a check that the installation is whole to begin with)."""
    installed.healthy()
    return installed.manifest()


def test_dockerd_restarted_without_live_restore_brings_everything_back(installed, kept):
    before = installed.parent()["State"]["StartedAt"]
    installed.restart_engine(live_restore=False)
    assert installed.parent()["State"]["StartedAt"] != before, "every container stopped with the engine"
    installed.holds(kept)


def test_dockerd_restarted_with_live_restore_keeps_the_parent_running(installed, kept):
    started = installed.parent()["State"]["StartedAt"]
    with installed.engine() as client:
        fixed = auto_remove_survives(client.version()["Version"])
    warm = {c["Id"] for c in installed.warm()}
    installed.restart_engine(live_restore=True)
    assert installed.parent()["State"]["StartedAt"] == started, "the parent ran on through the restart"
    # Its socket is the new engine's (the directory is mounted, not the old socket file).
    assert installed.run("python3", "/opt/hal9000/bin/healthcheck.py", "socket")[0] == 0
    # Docker before 24.0.8 removes running --rm containers at a live-restore (moby/moby#46308): the pool refills.
    with installed.engine() as client:
        survivors = {c["Id"] for c in client.api.containers(all=True)} & warm
    assert survivors == (warm if fixed else set()), (fixed, survivors)
    installed.holds(kept)


def auto_remove_survives(version):
    """Whether this engine keeps running auto-remove containers through a live-restore (moby/moby#46308)."""
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3]) >= (24, 0, 8)  # e.g. 20.10.24+dfsg1


def test_the_parent_killed_with_sigkill_comes_back(installed, kept):
    claimed = installed.claim(keep=True)
    state = installed.parent()["State"]
    before = state["StartedAt"]
    # From the node, as the kernel's OOM killer would: `docker kill` counts as a stop the restart policy obeys.
    installed.node_command("kill", "-KILL", str(state["Pid"]))
    wait_for(lambda: installed.parent()["State"]["StartedAt"] != before, 30, "the restart policy to start it again")
    installed.healthy()
    # The claimed worker kept the old network namespace: it is reported, never silently left so.
    listed = {worker["name"]: worker for worker in json.loads(installed.ok("coordinator", "list", "--json"))}
    assert listed[claimed]["network_ok"] is False, listed[claimed]
    with installed.engine() as client:
        client.api.remove_container(claimed, force=True, v=True)
    installed.holds(kept)


def test_a_killed_pool_manager_is_started_again(installed, kept):
    pid = installed.ok("cat", "/run/hal9000/pool-manager.pid").strip()
    installed.ok("kill", "-KILL", pid)
    wait_for(lambda: installed.run("cat", "/run/hal9000/pool-manager.pid")[1].strip() not in ("", pid)
             and installed.run("sh", "-c", "kill -0 $(cat /run/hal9000/pool-manager.pid)")[0] == 0,
             20, "the parent to start the pool manager again")
    log = installed.ok("cat", f"{HOME}/logs/parent.log")
    assert "the pool manager is not running (exit code -9); starting it again" in log, log[-2000:]
    installed.holds(kept)
