"""A fleet of three real Docker Engines (tests/fleet/nodes.py): images built once and distributed, one status,
site.yml with a node stopped in the middle, placement and rolling upgrades.

The nodes are containers running their own dockerd, reached by Ansible over ssh as ordinary inventory hosts.
Only loopback and the nodes' addresses are contacted: the build host (node1) is seeded with the base image
and a parent image built here from the same build inputs, so its build finds that digest and needs no
network; node2 and node3 start empty and must get everything from node1.

The playbooks run from a snapshot of the collection taken at the start (others edit the working tree while
tests run; a changed file between the seed and the run would make node1 rebuild).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sys
import threading
import time

import docker
import pytest

from helpers import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "tests" / "fleet"))
from nodes import fleet  # noqa: E402  (tests/fleet is not a package)
from plays import batch_results, collection_snapshot, distribute, play, seed_build_host, task_results  # noqa: E402
# registry is a fixture (a private registry container), used by name.
from test_image_pull import PASSWORD as REGISTRY_PASSWORD, USER as REGISTRY_USER, registry  # noqa: E402,F401  pylint: disable=unused-import

BASE = "debian:bookworm-slim"
PARENT = "hal9000/parent:latest"
# Only what the parent needs: no MCP sidecar, no worker flavour (a worker image is ~500 MB per node).
IMAGES_ONLY = {"hal9000_hosts": "fleet", "images_mcp": False, "images_worker_flavours": []}
# site.yml as the placement and upgrade tests need it: the relay off (no MCP image), workers from an idle image
# built inside the nodes only (see idle_image).
IDLE = "{prefix}/worker:idle"
SITE = dict(IMAGES_ONLY, install_worker_flavours=[], daemon_enable_mcp_relay=False)


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    return collection_snapshot(tmp_path_factory.mktemp("collection"))


@pytest.fixture(scope="module")
def nodes(collection, tmp_path_factory):
    """Three nodes; node1 (the build host) holds the base image and a parent image with the collection's digest."""
    client = docker.from_env()
    with fleet(3, client=client) as started:
        seed_build_host(started, collection, tmp_path_factory.mktemp("seed"))
        started.inventory_path = started.write_inventory(tmp_path_factory.mktemp("inventory") / "fleet.json")
        yield started


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

    # (A second run builds, sends and changes nothing: the converged site.yml run checks it, in
    # test_site_completes_every_node_but_the_stopped_one_then_a_rerun_completes_it.)

    # One host loses the parent image: check mode says only that host would receive it, and sends nothing.
    with contextlib.closing(others[1].client()) as client:
        client.api.remove_image(PARENT)
    checked, seen = run_images(nodes, collection, tmp_path, check=True)
    messages = next(iter(task_results(checked, "hosts whose images differ").values()))["messages"]
    assert f"{others[0].name}: current" in messages
    assert f"{others[1].name}: would receive {PARENT}" in messages
    assert image_id(others[1], PARENT) is None
    assert not [e for events_ in seen.values() for e in events_ if e["Action"] == "load"]

    # The real run sends it to that host alone, without the base image's layer, which that host still holds.
    result, seen = run_images(nodes, collection, tmp_path)
    assert image_id(others[1], PARENT) == image_id(build_host, PARENT)
    assert [e for e in seen[others[1].name] if e["Action"] == "load"]
    assert not [e for e in seen[others[0].name] if e["Action"] == "load"]
    resent = next(iter(task_results(result, "hosts whose images differ").values()))["hosts"][others[1].name]
    assert resent["sent"] == [PARENT] and resent["skipped_layers"] == 1, resent
    assert resent["bytes"] < hosts[others[1].name]["bytes"] - 70_000_000, (resent, hosts[others[1].name])


def test_a_changed_image_sends_only_its_new_layer(nodes, collection, tmp_path):
    """Hosts holding the parent's layers get a changed parent (one more layer) in kilobytes, loaded whole."""
    build_host, others = nodes[0], nodes[1:]
    changed = f"{nodes.prefix}/parent:changed"
    build_in(build_host, changed, f"FROM {PARENT}\nUSER root\nRUN echo changed > /etc/hal9000-changed\n")
    try:
        result, copied = distribute(collection, tmp_path, build_host.docker_host, [changed],
                                    {node.name: node.docker_host for node in others})
        assert result["rc"] == 0, copied
        with contextlib.closing(build_host.client()) as client:
            layers = len(client.api.inspect_image(PARENT)["RootFS"]["Layers"])
        for node in others:
            host = copied["hosts"][node.name]
            assert host["sent"] == [changed] and host["skipped_layers"] == layers, host
            assert host["bytes"] < 1_000_000, host
            assert image_id(node, changed) == image_id(build_host, changed)
            with contextlib.closing(node.client()) as client:  # every layer is there: a container reads the new file
                output = client.containers.run(changed, ["cat", "/etc/hal9000-changed"], entrypoint=[], remove=True)
            assert output == b"changed\n"
    finally:
        for node in nodes:
            with contextlib.closing(node.client()) as client, contextlib.suppress(docker.errors.NotFound):
                client.api.remove_image(changed)


def test_the_controller_reaches_engines_over_ssh(nodes, collection, tmp_path, monkeypatch):
    """ssh://user@host, fleet_docker_host's default: the module streams through `ssh HOST docker system dial-stdio`.

    The ssh command reads the user's own configuration; here a config naming the fleet's key, which a wrapper
    first on PATH passes (ssh takes ~/.ssh/config from the passwd entry, not from $HOME).
    """
    build_host, target = nodes[0], nodes[1]
    config = tmp_path / "ssh_config"
    config.write_text(f"Host {' '.join(node.address for node in nodes)}\n  IdentityFile {nodes.key}\n"
                      "  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n")
    wrapper = tmp_path / "bin" / "ssh"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\nexec {shutil.which("ssh")} -F {config} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{wrapper.parent}:{os.environ['PATH']}")
    labelled = f"{nodes.prefix}/base:over-ssh"
    build_in(build_host, labelled, f"FROM {BASE}\nLABEL io.hal9000.test=over-ssh\n")
    held = 1 if image_id(target, BASE) else 0
    try:
        result, copied = distribute(collection, tmp_path, f"ssh://root@{build_host.address}", [labelled],
                                    {target.name: f"ssh://root@{target.address}"})
        assert result["rc"] == 0, copied
        assert copied["hosts"][target.name]["sent"] == [labelled], copied
        assert copied["hosts"][target.name]["skipped_layers"] == held, copied
        assert image_id(target, labelled) == image_id(build_host, labelled)
    finally:
        for node in (build_host, target):
            with contextlib.closing(node.client()) as client, contextlib.suppress(docker.errors.NotFound):
                client.api.remove_image(labelled)


def test_every_host_pulls_from_a_registry_with_credentials(nodes, collection, tmp_path, registry):
    """images_source=pull on the fleet: each host pulls the parent from a private registry with credentials from
    an owner-only file on that host; a host that has it already pulls nothing."""
    build_host, others = nodes[0], nodes[1:]
    repository = f"{registry['bridge_address']}/{registry['base']}/{PARENT.split(':', maxsplit=1)[0]}"
    wanted = image_id(build_host, PARENT)
    with contextlib.closing(build_host.client()) as client:  # the registry gets node1's parent
        client.api.tag(PARENT, repository, "latest")
        for chunk in client.api.push(repository, tag="latest", stream=True, decode=True,
                                     auth_config={"username": REGISTRY_USER, "password": REGISTRY_PASSWORD}):
            assert "error" not in chunk, chunk
        client.api.remove_image(f"{repository}:latest")
    for node in others:
        with contextlib.closing(node.client()) as client:
            client.api.remove_image(PARENT)
    auth = "/root/h9-registry-auth.json"
    pull = [{"hosts": "fleet", "gather_facts": False, "tasks": [
        {"name": "Registry credentials", "no_log": True, "ansible.builtin.copy": {
            "content": json.dumps({"username": REGISTRY_USER, "password": REGISTRY_PASSWORD}), "dest": auth, "mode": "0600"}},
        {"ansible.builtin.include_role": {"name": "hal9000.dind.images"}, "vars": {
            "images_source": "pull", "images_registry": f"{registry['bridge_address']}/{registry['base']}/",
            "images_registry_auth_file": auth, "images_mcp": False, "images_worker_flavours": []}},
    ]}]
    result = play(collection, tmp_path, pull, nodes.inventory_path)
    pulled = task_results(result, "Pull the images")
    assert result["rc"] == 0, json.dumps(pulled)
    assert REGISTRY_PASSWORD not in json.dumps(result)
    assert pulled[build_host.name]["changed"] is False, pulled[build_host.name]
    for node in others:
        (outcome,) = pulled[node.name]["results"]
        assert outcome["actions"] == [f"pulled {repository}:latest and tagged it {PARENT}"], outcome
        assert image_id(node, PARENT) == wanted


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
        nodes.write_inventory(nodes.inventory_path)  # a restarted node may have another address


def test_a_host_whose_engine_cannot_be_reached_fails_alone_and_by_name(nodes, collection, tmp_path):
    source, target = nodes[0], nodes[1]
    with contextlib.closing(target.client()) as client:
        client.api.remove_image(BASE)
    copied = distribute(collection, tmp_path, source.docker_host, [BASE, PARENT],
                        {target.name: target.docker_host, "gone": f"unix://{tmp_path}/no-engine.sock"},
                        ignore_errors=True)[1]
    assert copied["failed"] and copied["msg"].startswith("Could not bring gone up to date (gone: Cannot reach the Docker Engine at unix://")
    assert copied["hosts"][target.name]["sent"] == [BASE] and "error" not in copied["hosts"][target.name]
    assert image_id(target, BASE) == image_id(source, BASE)


def build_in(node, tag, dockerfile):
    """An image built inside ``node``'s engine from a Dockerfile text (its FROM is already there: no network)."""
    with contextlib.closing(node.client()) as client:
        client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, pull=False, rm=True, forcerm=True)


def parent_of(node):
    """The parent's container ID, image ID and health on ``node``; None when it has none."""
    with contextlib.closing(node.client()) as client:
        try:
            inspected = client.api.inspect_container("hal9000-parent")
        except docker.errors.NotFound:
            return None
    return {"id": inspected["Id"], "image": inspected["Image"],
            "health": (inspected["State"].get("Health") or {}).get("Status"), "running": inspected["State"]["Running"]}


def unchanged(parent, before):
    """The same parent container on the same image, still running (its health may have moved on from starting)."""
    return parent is not None and {k: parent[k] for k in ("id", "image", "running")} == {k: before[k] for k in ("id", "image", "running")}


def warm_on(node):
    with contextlib.closing(node.client()) as client:
        return [c["Names"][0][1:] for c in client.api.containers(filters={"label": "io.hal9000.pool", "name": "^/hal9000-warm-"})]


def remove_containers(node, names):
    with contextlib.closing(node.client()) as client:
        for name in names:
            with contextlib.suppress(docker.errors.NotFound):
                client.api.remove_container(name, force=True, v=True)


def memory_total_mb():
    """The nodes see this machine's /proc/meminfo (no per-container view)."""
    with open("/proc/meminfo", encoding="utf-8") as handle:
        return int(handle.readline().split()[1]) // 1024


def idle_image(nodes, collection, tmp_path):
    """The installation's worker image: the base image sleeping, built inside each node once (no 450 MB worker image)."""
    if not getattr(nodes, "idle", None):
        if any(image_id(node, BASE) is None for node in nodes):  # run alone (-k): node1's images are not copied yet
            run_images(nodes, collection, tmp_path)
        for node in nodes:
            build_in(node, IDLE.format(prefix=nodes.prefix), f'FROM {BASE}\nCMD ["sleep", "infinity"]\n')
        nodes.idle = IDLE.format(prefix=nodes.prefix)
    return nodes.idle


def site(nodes, collection, tmp_path):
    """site.yml across the fleet, configured for the placement and upgrade tests."""
    config = {"WORKER_IMAGE": idle_image(nodes, collection, tmp_path), "ENABLE_MCP_RELAY": "false", "SKIP_IMAGE_PULL": "true"}
    return play(collection, tmp_path, collection / "playbooks" / "site.yml", nodes.inventory_path, dict(SITE, volumes_config=config))


class StopOnEvent(threading.Thread):
    """Stops ``node`` (its container, as nodes.stop does, or with ``kill`` as nodes.kill does) at the first event of
    its engine that matches ``filters``.

    The engine's event stream is open once this is made, so the event cannot pass before anyone listens: the node stops
    at a given step of a play, whatever the machine's speed.
    """

    def __init__(self, nodes, node, kill=False, **filters):
        super().__init__(daemon=True)
        self.nodes, self.node, self.event = nodes, node, None
        self.halt = nodes.kill if kill else nodes.stop
        self.client = node.client(timeout=900)
        self.stream = self.client.events(filters=filters, decode=True)
        self.start()

    def run(self):
        with contextlib.suppress(Exception):  # the stream ends with the engine, or when closed unheard
            for event in self.stream:
                self.event = event
                self.halt(self.node)
                return

    def close(self):
        with contextlib.suppress(Exception):  # already ended with the engine
            self.stream.close()
        self.join(30)
        self.client.close()


def failed_hosts(result):
    """host -> the message of each task that failed or found it unreachable."""
    found = {}
    for each in result["plays"]:
        for task in each["tasks"]:
            for host, outcome in task["hosts"].items():
                if (outcome.get("failed") or outcome.get("unreachable")) and not outcome.get("skipped"):
                    found.setdefault(host, []).append(f"{task['task']['name']}: {outcome.get('msg', '')}")
    return found


def test_site_completes_every_node_but_the_stopped_one_then_a_rerun_completes_it(nodes, collection, tmp_path):
    node1, node2, node3 = nodes
    nodes.write_inventory(nodes.inventory_path)  # the addresses now (a node restarted by an earlier test may have moved)
    with contextlib.closing(node3.client()) as client:
        assert not client.api.volumes(filters={"name": "hal9000-"}).get("Volumes"), "node3 must start without volumes"

    # node3 stops as the volumes role creates its first volume: past the images (it has them) and claudy, before its parent.
    stopper = StopOnEvent(nodes, node3, type="volume", event="create")
    try:
        first = site(nodes, collection, tmp_path)
    finally:
        stopper.close()
    assert stopper.event and stopper.event["Actor"]["ID"].startswith("hal9000-"), stopper.event
    try:
        assert first["rc"] != 0, first["stats"]
        failed = failed_hosts(first)
        assert list(failed) == [node3.name], failed
        assert first["stats"][node3.name]["failures"] + first["stats"][node3.name]["unreachable"] == 1, first["stats"]
        for node in (node1, node2):  # the others completed: their parents run
            assert first["stats"][node.name]["failures"] == first["stats"][node.name]["unreachable"] == 0, first["stats"]
            assert (parent_of(node) or {}).get("running"), node.name
    finally:
        nodes.start(node3)
        nodes.write_inventory(nodes.inventory_path)  # a restarted node may have another address
    assert parent_of(node3) is None  # stopped before its parent was made

    # The same command completes node3 and changes nothing on the others.
    second = site(nodes, collection, tmp_path)
    assert second["rc"] == 0, json.dumps(failed_hosts(second))
    assert second["stats"][node1.name]["changed"] == second["stats"][node2.name]["changed"] == 0, second["stats"]
    assert second["stats"][node3.name]["changed"] > 0
    parents = {node.name: parent_of(node) for node in nodes}
    assert all(p["running"] and p["image"] == image_id(node1, PARENT) for p in parents.values()), parents

    # A converged fleet: changed=0 on every node, nothing built, sent, loaded, created or removed.
    since = time.time_ns()
    third = site(nodes, collection, tmp_path)
    seen = {node.name: events(node, since, int(time.time()) + 1) for node in nodes}
    assert third["rc"] == 0 and all(stats["changed"] == 0 for stats in third["stats"].values()), third["stats"]
    assert not [e for events_ in seen.values() for e in events_ if e["Action"] in ("load", "create", "destroy", "tag")], seen
    hosts = next(iter(task_results(third, "hosts whose images differ").values()))["hosts"]
    assert all(outcome["sent"] == [] and outcome["bytes"] == 0 for outcome in hosts.values()), hosts
    assert {node.name: parent_of(node)["id"] for node in nodes} == {name: p["id"] for name, p in parents.items()}


@pytest.fixture(scope="module")
def installed(nodes, collection, tmp_path_factory):
    """Every node with node1's parent image, the idle worker image and a running parent; node2 keeps one warm worker.

    site.yml made them in the test above; run alone (-k), this fixture runs it.
    """
    workdir = tmp_path_factory.mktemp("installed")
    nodes.write_inventory(nodes.inventory_path)  # the addresses now (a node restarted by an earlier test may have moved)
    wanted = image_id(nodes[0], PARENT)
    parents = [parent_of(node) or {} for node in nodes]
    if not all(parent.get("running") and parent.get("image") == wanted for parent in parents):
        result = site(nodes, collection, workdir)
        assert result["rc"] == 0, json.dumps(failed_hosts(result))
    idle_image(nodes, collection, workdir)
    result = play(collection, workdir, collection / "playbooks" / "pool.yml", nodes.inventory_path,
                  {"hal9000_hosts": nodes[1].name, "pool_enabled": True, "pool_min_warm_workers": 1, "pool_max_warm_workers": 1})
    assert result["rc"] == 0, result["stats"]
    return nodes


def spawn(nodes, collection, tmp_path, **extra):
    return play(collection, tmp_path, collection / "playbooks" / "spawn_worker.yml", nodes.inventory_path,
                dict({"hal9000_hosts": "fleet", "worker_host": "auto"}, **extra))


def test_placement_takes_the_warm_worker_then_the_most_free_memory_and_says_when_the_fleet_is_full(installed, collection, tmp_path):
    nodes, prefix = installed, installed.prefix
    node1, node2, node3 = nodes
    made = {node.name: [] for node in nodes}
    try:
        # node2 alone has a warm worker of the pool for the idle image: it is claimed there, though node3 has more room.
        result = spawn(nodes, collection, tmp_path, worker_image=nodes.idle, worker_name=f"{prefix}-warm")
        assert result["rc"] == 0, json.dumps(task_results(result, "the most free memory"))
        made[node2.name].append(f"{prefix}-warm")
        spawned = task_results(result, "Spawn the worker")
        assert spawned[node2.name]["claimed"] is True
        assert all(spawned[node.name].get("skipped") for node in (node1, node3))
        said = task_results(result, "Say how to attach")[node2.name]["msg"]
        assert said[0].startswith(f"Worker {prefix}-warm is running on {node2.name} (no project): claimed a warm worker")
        assert f"ssh -t root@{node2.address} docker exec -it {prefix}-warm claude" in said[3]
        assert said[4] == f"Or through its engine: docker -H {node2.docker_host} exec -it {prefix}-warm claude"

        # No warm worker of the base image's pool: node1 and node2 hold workers whose limits leave them 2 GiB and
        # less than nothing, node3 nothing; the most free memory against the limits is node3's.
        total = memory_total_mb()
        heavy = {node1.name: f"{total - 2048}m", node2.name: f"{total - 1024}m"}
        result = play(collection, tmp_path, [{"hosts": f"{node1.name},{node2.name}", "gather_facts": False, "tasks": [
            {"hal9000.dind.worker": {"name": f"{prefix}-heavy", "image": nodes.idle, "memory": heavy_expr(heavy)}}]}],
            nodes.inventory_path)
        assert result["rc"] == 0, json.dumps(task_results(result, "worker"))
        made[node1.name].append(f"{prefix}-heavy")
        made[node2.name].append(f"{prefix}-heavy")
        result = spawn(nodes, collection, tmp_path, worker_image=BASE, worker_command=["sleep", "infinity"],
                       worker_memory="1g", worker_name=f"{prefix}-roomy")
        assert result["rc"] == 0, json.dumps(task_results(result, "the most free memory"))
        made[node3.name].append(f"{prefix}-roomy")
        placed = task_results(result, "the most free memory")[node1.name]
        assert (placed["host"], placed["action"]) == (node3.name, "spawn"), placed
        rows = {row["name"]: row for row in placed["hosts"]}
        assert 2 * 2**30 <= rows[node1.name]["free"] < 2 * 2**30 + 2**20 and not rows[node1.name]["why_not"]
        assert rows[node2.name]["why_not"].endswith("free against its workers' limits, 1.0 GiB needed")
        assert rows[node3.name]["free"] > rows[node1.name]["free"]
        assert task_results(result, "Spawn the worker")[node3.name]["claimed"] is False
        assert f"running on {node3.name}" in task_results(result, "Say how to attach")[node3.name]["msg"][0]

        # More memory than any host has: one message naming every host, and nothing made anywhere.
        result = spawn(nodes, collection, tmp_path, worker_image=BASE, worker_memory=f"{total + 1024}m", worker_name=f"{prefix}-huge")
        assert result["rc"] != 0
        failed = task_results(result, "the most free memory")[node1.name]
        assert failed["msg"].startswith(f"No host of the fleet can take the worker: none has a warm worker for {BASE} without a project nor room")
        assert all(f"{node.name}: " in failed["msg"] for node in nodes) and "\n" not in failed["msg"]
        for node in nodes:
            with contextlib.closing(node.client()) as client:
                assert not client.api.containers(all=True, filters={"name": f"^/{prefix}-huge$"})
    finally:
        for node in nodes:
            remove_containers(node, made[node.name])


def heavy_expr(limits):
    """A per-host value in a play: the limit for the host the task runs on."""
    return "{{ " + json.dumps(limits) + "[inventory_hostname] }}"


def upgrade(nodes, collection, tmp_path, **extra):
    return play(collection, tmp_path, collection / "playbooks" / "upgrade.yml", nodes.inventory_path,
                dict(IMAGES_ONLY, **extra))


def test_upgrade_goes_host_by_host_and_leaves_a_host_with_a_busy_worker_for_later(installed, collection, tmp_path):
    nodes, prefix = installed, installed.prefix
    node1, node2, node3 = nodes
    busy = f"{prefix}-busy"
    result = play(collection, tmp_path, [{"hosts": node2.name, "gather_facts": False, "tasks": [
        {"hal9000.dind.worker": {"name": busy, "image": nodes.idle, "memory": "256m"}}]}], nodes.inventory_path)
    assert result["rc"] == 0, json.dumps(task_results(result, "worker"))
    try:
        # A new parent image on the build host only (same build inputs, another ID): upgrade.yml copies it and rolls it out.
        build_in(node1, PARENT, f"FROM {PARENT}\nLABEL io.hal9000.test-upgrade={time.time_ns()}\n")
        new = image_id(node1, PARENT)
        before = {node.name: parent_of(node) for node in nodes}
        result = upgrade(nodes, collection, tmp_path, upgrade_drain_timeout=3)
        assert result["rc"] == 0, json.dumps(batch_results(result, "Stop the rollout"))
        after = {node.name: parent_of(node) for node in nodes}
        for node in (node1, node3):
            assert after[node.name]["id"] != before[node.name]["id"]
            assert (after[node.name]["image"], after[node.name]["health"]) == (new, "healthy")
        # node2's worker was still running after 3 s: node2 keeps its parent and hands out warm workers again.
        assert after[node2.name] == dict(before[node2.name], health=after[node2.name]["health"])
        left = batch_results(result, "Report it")[node2.name]["msg"]
        assert left.startswith(f"{node2.name} left for later: workers {busy} still run after 3 s (upgrade_drain_timeout)")
        assert task_results(result, "List the hosts left for later")[node1.name]["msg"] == [left]
        with contextlib.closing(node2.client()) as client:
            assert client.api.inspect_container(busy)["State"]["Running"]

        # Once it has ended, the same command upgrades node2 alone and its pool is full again.
        remove_containers(node2, [busy])
        result = upgrade(nodes, collection, tmp_path, upgrade_images=False)
        assert result["rc"] == 0, json.dumps(batch_results(result, "Stop the rollout"))
        again = {node.name: parent_of(node) for node in nodes}
        assert again[node1.name]["id"] == after[node1.name]["id"] and again[node3.name]["id"] == after[node3.name]["id"]
        assert again[node2.name]["id"] != after[node2.name]["id"]
        assert all((p["image"], p["health"]) == (new, "healthy") for p in again.values()), again
        assert task_results(result, "List the hosts left for later")[node1.name]["msg"] == "Every host runs the current parent image."
        refilled = batch_results(result, "Refill the pools")[node2.name]
        assert [(p["name"], p["warm"]) for p in refilled["pools"]] == [("generic", 1)]
        assert len(warm_on(node2)) == 1
    finally:
        remove_containers(node2, [busy])


def test_a_host_failing_its_health_check_stops_the_rollout_there(installed, collection, tmp_path):
    nodes = installed
    broken = f"{nodes.prefix}/parent:broken"
    for node in nodes:  # on the nodes only: a parent whose health check always fails, at once
        build_in(node, broken, f'FROM {PARENT}\nHEALTHCHECK --interval=1s --timeout=3s --retries=1 CMD ["false"]\n')
    before = {node.name: parent_of(node) for node in nodes}
    try:
        result = upgrade(nodes, collection, tmp_path, upgrade_images=False, daemon_image=broken)
        assert result["rc"] != 0
        stopped = batch_results(result, "Stop the rollout")
        assert list(stopped) == [nodes[0].name]
        message = stopped[nodes[0].name]["msg"]
        assert message.startswith(f"Upgrade stopped at {nodes[0].name}: Check the parent's health failed "
                                  f"(the parent hal9000-parent on {broken} is running, health unhealthy")
        assert "resume with the same command" in message
        for node in nodes[1:]:  # never reached: still the old parent (health aside: just made, it may have been starting)
            assert unchanged(parent_of(node), before[node.name])
    finally:  # the build host back on the current image, as a resumed rollout does it
        result = upgrade(nodes, collection, tmp_path, upgrade_images=False, hal9000_hosts=nodes[0].name)
        assert result["rc"] == 0, json.dumps(batch_results(result, "Stop the rollout"))
        assert parent_of(nodes[0])["health"] == "healthy"


def test_a_parent_image_that_does_not_start_stops_the_rollout_there(installed, collection, tmp_path):
    nodes = installed
    node1 = nodes[0]
    # On node1 only (the rollout must never get further): a parent whose entrypoint exits at once, and one whose
    # container cannot start at all (its user does not exist).
    dead, unstartable = f"{nodes.prefix}/parent:dead", f"{nodes.prefix}/parent:unstartable"
    build_in(node1, dead, f'FROM {PARENT}\nENTRYPOINT ["sh", "-c", "echo {nodes.prefix} refuses to start >&2; exit 3"]\nCMD []\n')
    build_in(node1, unstartable, f"FROM {PARENT}\nUSER {nodes.prefix}-nobody\n")
    before = {node.name: parent_of(node) for node in nodes}
    try:
        result = upgrade(nodes, collection, tmp_path, upgrade_images=False, daemon_image=dead, daemon_wait_timeout=10)
        assert result["rc"] != 0
        stopped = batch_results(result, "Stop the rollout")
        assert list(stopped) == [node1.name], stopped
        message = stopped[node1.name]["msg"]
        # Its restart policy restarts it until the wait ends; the log lines say why.
        assert message.startswith(f"Upgrade stopped at {node1.name}: Put the parent in the requested state failed (The parent did "
                                  "not become ready (ChromaDB answering) within 10 s (it exited "), message
        assert "last with code 3); its last log lines: " in message and f"{nodes.prefix} refuses to start" in message, message
        assert "resume with the same command" in message
        assert parent_of(node1)["image"] == image_id(node1, dead)  # left as it failed, as an unhealthy parent is
        for node in nodes[1:]:
            assert unchanged(parent_of(node), before[node.name])

        # A container that cannot start: the same stop, and the drain of the parent above (restarting) found nothing to drain.
        result = upgrade(nodes, collection, tmp_path, upgrade_images=False, daemon_image=unstartable)
        assert result["rc"] != 0
        stopped = batch_results(result, "Stop the rollout")
        assert list(stopped) == [node1.name], stopped
        message = stopped[node1.name]["msg"]
        assert message.startswith(f"Upgrade stopped at {node1.name}: Put the parent in the requested state failed ("), message
        assert f"{nodes.prefix}-nobody" in message and "resume with the same command" in message, message
        assert not parent_of(node1)["running"]
        for node in nodes[1:]:
            assert unchanged(parent_of(node), before[node.name])
    finally:  # the build host back on the current image, as a resumed rollout does it
        result = upgrade(nodes, collection, tmp_path, upgrade_images=False, hal9000_hosts=node1.name)
        assert result["rc"] == 0, json.dumps(batch_results(result, "Stop the rollout"))
        assert parent_of(node1)["health"] == "healthy"


def test_a_host_unreachable_before_its_turn_is_named_at_the_end(installed, collection, tmp_path):
    """Down while the images are made: Ansible leaves it out of the rollout, and the last line says it was not upgraded."""
    nodes = installed
    node1, node2, node3 = nodes
    nodes.stop(node3)
    try:
        result = upgrade(nodes, collection, tmp_path)
        assert result["rc"] != 0
        summary = [outcome["msg"] for outcome in task_results(result, "List the hosts left for later").values()]
        assert summary == [[f"{node3.name}: not upgraded: it failed or could not be reached before its turn (see above); "
                            "fix it, then run the same command"]], summary
        assert sorted(batch_results(result, "Report the upgrade")) == [node1.name, node2.name]
    finally:
        nodes.start(node3)
        nodes.write_inventory(nodes.inventory_path)  # a restarted node may have another address


def test_a_host_that_becomes_unreachable_stops_the_rollout_there_and_the_same_command_resumes_it(installed, collection, tmp_path):
    """The last test: it leaves every parent on its own image (the fleet goes with the module)."""
    nodes = installed
    node1, node2, node3 = nodes
    nodes.write_inventory(nodes.inventory_path)  # the addresses now (a node restarted by an earlier test may have moved)
    new = f"{nodes.prefix}/parent:next"
    for node in nodes:
        build_in(node, new, f"FROM {PARENT}\nLABEL io.hal9000.test-unreachable={time.time_ns()}\n")
    before = {node.name: parent_of(node) for node in nodes}

    # node2 goes down as its new parent is created: drained, its old parent gone, in the middle of the parent module's
    # task. Killed, not stopped: a stop ends its engine first, and the module would report that instead of its ssh.
    stopper = StopOnEvent(nodes, node2, kill=True, type="container", event="create", container="hal9000-parent")
    try:
        result = upgrade(nodes, collection, tmp_path, upgrade_images=False, daemon_image=new)
    finally:
        stopper.close()
    assert stopper.event, "node2 was never stopped"
    try:
        assert result["rc"] != 0
        stopped = batch_results(result, "Stop the rollout")
        assert list(stopped) == [node2.name], stopped
        message = stopped[node2.name]["msg"]
        assert message.startswith(f"Upgrade stopped at {node2.name}: Reach the host failed (unreachable: "), message
        assert "The hosts not yet upgraded keep the old version" in message and "resume with the same command" in message
        assert (parent_of(node1)["image"], parent_of(node1)["health"]) == (image_id(node1, new), "healthy")
        assert unchanged(parent_of(node3), before[node3.name])  # never reached
    finally:
        nodes.start(node2)
        nodes.write_inventory(nodes.inventory_path)  # a restarted node may have another address

    result = upgrade(nodes, collection, tmp_path, upgrade_images=False, daemon_image=new)
    assert result["rc"] == 0, json.dumps(failed_hosts(result))
    reports = batch_results(result, "Report the upgrade")
    assert reports[node1.name]["msg"] == f"{node1.name}: current ({new})"
    # node2's new parent was created, maybe started: its engine may have started it again, else the rollout recreated it.
    assert reports[node3.name]["msg"] == f"{node3.name}: parent recreated on {new}, healthy"
    assert reports[node2.name]["msg"] in (f"{node2.name}: parent recreated on {new}, healthy", f"{node2.name}: current ({new})")
    for node in nodes:
        assert (parent_of(node)["image"], parent_of(node)["running"]) == (image_id(node, new), True), node.name
