"""One home for settings and one decision of "is this worker current?", on the real engine.

hal9000.conf is written the way a user writes it (the volumes role's volumes_config), then the
parent, the worker module, `coordinator spawn`, `coordinator claim` and the pool all follow it.
A worker image rebuilt under the same tag is what every claim and the pool then use.
"""

from __future__ import annotations

import io
import json
import shutil

import docker
import pytest

from helpers import (
    AnsibleRunner, REPO_ROOT, exec_in, owned_project, parent_args, remove_installation, succeeded, wait_for,
)

GIB = 1024 ** 3


class Installation:
    """A test installation: its own parent name, volume prefix and home, configured through the roles."""

    def __init__(self, client, workdir, base):
        self.client = client
        self.base = base
        self.home = workdir / "home"
        self.runner = AnsibleRunner(workdir)
        self.args = parent_args(base, self.home)
        self.name = self.args["name"]

    def configure(self, **settings):
        """hal9000.conf as a user writes it: playbooks/volumes.yml with volumes_config."""
        extra = {"hal9000_home": str(self.home), "hal9000_volume_prefix": self.base, "volumes_config": settings}
        self.runner.playbook(REPO_ROOT / "playbooks" / "volumes.yml", "-e", json.dumps(extra))

    def parent(self, **args):
        return succeeded(self.runner.task("hal9000.dind.parent", dict(self.args, **args)))

    def worker(self, name, **args):
        return succeeded(self.runner.task("hal9000.dind.worker", {"name": name, "parent": self.name, **args}))

    def pool(self, **args):
        return succeeded(self.runner.task("hal9000.dind.pool", {"parent": self.name, "hal9000_home": str(self.home), **args}))

    def coordinator(self, *argv):
        code, out, err = exec_in(self.client, self.name, ["coordinator", *argv])
        assert code == 0, (argv, out, err)
        return out

    def limits(self, name):
        host = self.client.api.inspect_container(name)["HostConfig"]
        return host["Memory"], host["CpuQuota"] / host["CpuPeriod"], host["PidsLimit"]

    def warm(self):
        summaries = self.client.api.containers(filters={
            "label": ["io.hal9000.role=worker", f"io.hal9000.parent={self.name}"], "status": "running"})
        return [s for s in summaries
                if s["Labels"].get("io.hal9000.pool") and s["Labels"].get("io.hal9000.warm-name") == s["Names"][0][1:]]


@pytest.fixture
def installation(docker_client, prefix, tmp_path, request):
    base = f"{prefix}-set-{request.node.name[5:13].replace('_', '')}"
    made = Installation(docker_client, tmp_path, base)
    try:
        yield made
    finally:
        remove_installation(docker_client, base, made.name)
        shutil.rmtree(made.home, ignore_errors=True)


FILE = dict(WORKER_MEMORY="6g", WORKER_CPUS="1", WORKER_PIDS_LIMIT="77", MIN_WARM_WORKERS="1", MAX_WARM_WORKERS="2",
            IDLE_TIMEOUT="120", SKIP_IMAGE_PULL="true", LAZY_IMAGE_PULL="true", ENABLE_POOL_MANAGER="true")


def test_every_reader_follows_hal9000_conf(installation):
    inst = installation
    inst.configure(CHROMADB_PORT="8100", **FILE)
    started = inst.parent()
    # The parent: the start-up settings from the file, and none of them in its environment.
    settings = started["parent"]["settings"]
    assert (settings["chromadb_port"], settings["skip_image_pull"], settings["lazy_image_pull"], settings["memory"]) \
        == (8100, True, True, "6g"), settings
    # ENABLE_POOL_MANAGER from the file started the pool manager, which keeps the file's minimum.
    assert json.loads(inst.coordinator("pool", "status", "--json"))["running"] is True
    wait_for(lambda: len(inst.warm()) == 1, 30, "the file's minimum of one warm worker")
    assert "ChromaDB server: Running on port 8100" in started["status_lines"], started["status_lines"]
    env = inst.client.api.inspect_container(inst.name)["Config"]["Env"]
    assert not [item for item in env if item.split("=")[0] in ("CHROMADB_PORT", "WORKER_MEMORY", "MIN_WARM_WORKERS")], env

    # A start-up setting changed in the file makes a new parent that follows it; the same file changes nothing.
    # (Warm workers are the pool's: they never hold a recreate back.)
    inst.configure(CHROMADB_PORT="8200", **FILE)
    moved = inst.parent()
    assert moved["changed"] is True and moved["actions"][0].startswith(f"recreated {inst.name}"), moved
    assert moved["parent"]["settings"]["chromadb_port"] == 8200
    assert inst.parent()["changed"] is False
    # An explicit option still wins over the file, and only it is put in the environment.
    explicit = inst.parent(chromadb_port=8300)
    assert explicit["parent"]["settings"]["chromadb_port"] == 8300
    assert "CHROMADB_PORT=8300" in inst.client.api.inspect_container(inst.name)["Config"]["Env"]
    inst.parent()  # back to the file's port

    wanted = (6 * GIB, 1.0, 77)
    # The worker module.
    inst.worker(f"{inst.base}-module")
    assert inst.limits(f"{inst.base}-module") == wanted
    # coordinator spawn in the parent.
    inst.coordinator("spawn", "-n", f"{inst.base}-spawn")
    assert inst.limits(f"{inst.base}-spawn") == wanted
    # The pool: its minimum, maximum and idle timeout from the file, its warm workers with the file's limits.
    configured = inst.pool()
    assert [(p["name"], p["min"], p["max"], p["warm"]) for p in configured["pools"]] == [("generic", 1, 2, 1)], configured
    status = json.loads(inst.coordinator("pool", "status", "--json"))
    assert status["idle_timeout"] == 120 and status["pools"][0]["min"] == 1, status
    info = succeeded(inst.runner.task("hal9000.dind.info", {"parent": inst.name, "volume_prefix": inst.base}))
    assert info["pool"]["enabled"] is True and info["pool"]["idle_timeout"] == 120, info["pool"]
    assert [(p["name"], p["min"], p["max"], p["warm"]) for p in info["pool"]["pools"]] == [("generic", 1, 2, 1)]
    images = {image["name"]: image for image in info["images"]}
    assert images["hal9000/parent:latest"]["exists"] is True
    assert images["hal9000/worker:latest"]["id"] == inst.client.images.get("hal9000/worker:latest").id
    assert all(inst.limits(w["Id"]) == wanted for w in inst.warm())
    # Claimed by the worker module and by `coordinator claim`.
    claimed = inst.worker(f"{inst.base}-claimed", from_pool=True)
    assert claimed["claimed"] is True and inst.limits(f"{inst.base}-claimed") == wanted, claimed
    wait_for(lambda: len(inst.warm()) == 1, 15, "the pool to refill")
    answer = json.loads(inst.coordinator("claim", f"{inst.base}-claimed2", "--json"))
    assert answer["claimed"] is True and inst.limits(f"{inst.base}-claimed2") == wanted, answer

    # The file changes again: the next worker of every kind follows, a warm one included (limits set at claim).
    inst.configure(CHROMADB_PORT="8200", **dict(FILE, WORKER_MEMORY="5g"))
    assert inst.parent()["changed"] is False, "live settings need no new parent"
    changed = (5 * GIB, 1.0, 77)
    inst.worker(f"{inst.base}-module2")
    inst.coordinator("spawn", "-n", f"{inst.base}-spawn2")
    wait_for(lambda: len(inst.warm()) == 1, 15, "the pool to refill")
    inst.worker(f"{inst.base}-claimed3", from_pool=True)
    assert [inst.limits(f"{inst.base}-{n}") for n in ("module2", "spawn2", "claimed3")] == [changed] * 3
    # An explicit limit still wins over the file.
    inst.worker(f"{inst.base}-explicit", memory="1g")
    assert inst.limits(f"{inst.base}-explicit")[0] == GIB


def build_tagged(client, tag, build_input):
    """An image FROM the worker image under ``tag``, differing only by a label: a rebuild with a changed input."""
    dockerfile = f"FROM hal9000/worker:latest\nLABEL io.hal9000.test-build-input={build_input}\n"
    image, _logs = client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True)
    return image.id


def test_after_a_rebuild_claims_and_the_pool_use_the_new_image(installation):
    inst = installation
    tag = f"{inst.base}/worker:latest"
    built = [build_tagged(inst.client, tag, "1")]
    try:
        inst.configure(WORKER_IMAGE=tag, MIN_WARM_WORKERS="2", MAX_WARM_WORKERS="3")
        inst.parent()
        inst.pool()
        assert {w["ImageID"] for w in inst.warm()} == {built[0]}

        built.append(build_tagged(inst.client, tag, "2"))
        assert built[1] != built[0]
        first = inst.worker(f"{inst.base}-after", image=tag, from_pool=True)
        assert inst.client.api.inspect_container(first["worker"]["id"])["Image"] == built[1], first

        def back_to_minimum_on_the_new_image():
            warm = inst.warm()
            return len(warm) >= 2 and {w["ImageID"] for w in warm} == {built[1]}

        wait_for(back_to_minimum_on_the_new_image, 10, "two warm workers, all on the new image")
        second = inst.worker(f"{inst.base}-after2", image=tag, from_pool=True)
        assert second["claimed"] is True, second
        assert inst.client.api.inspect_container(second["worker"]["id"])["Image"] == built[1]
        # WORKER_IMAGE in the file is also what `coordinator spawn` starts and `coordinator claim` takes.
        inst.coordinator("spawn", "-n", f"{inst.base}-spawned")
        assert inst.client.api.inspect_container(f"{inst.base}-spawned")["Image"] == built[1]
        wait_for(back_to_minimum_on_the_new_image, 10, "the pool to refill")
        answer = json.loads(inst.coordinator("claim", f"{inst.base}-claimed", "--json"))
        assert answer["claimed"] is True and inst.client.api.inspect_container(f"{inst.base}-claimed")["Image"] == built[1]
        log = (inst.home / "logs" / "pool-manager.log").read_text()
        assert "(its image was rebuilt)" in log, log
    finally:
        remove_installation(inst.client, inst.base, inst.name)
        for image in reversed(built):
            try:
                inst.client.images.remove(image, force=True)
            except docker.errors.NotFound:
                pass


def test_a_pool_option_reaches_its_warm_workers_and_their_claims(installation, tmp_path):
    """read_only, declared once in workers.WORKER_OPTIONS, through the pool module, the pool manager and a claim."""
    inst = installation
    project = owned_project(tmp_path / "webapp")
    inst.configure()
    inst.parent()
    inst.pool(generic=False, pools=[{"name": "webapp", "project_dir": project, "min": 1, "max": 1, "read_only": True}])
    warm = inst.warm()
    assert len(warm) == 1 and inst.client.api.inspect_container(warm[0]["Id"])["HostConfig"]["ReadonlyRootfs"] is True
    claimed = inst.worker(f"{inst.base}-ro", project_dir=project, read_only=True, from_pool=True)
    assert claimed["claimed"] is True, claimed
    assert inst.client.api.inspect_container(f"{inst.base}-ro")["HostConfig"]["ReadonlyRootfs"] is True
    other = inst.worker(f"{inst.base}-rw", project_dir=project, from_pool=True)
    assert other["claimed"] is False, "a writable worker is not taken from a read-only pool"
