"""The warm pool against the real Docker Engine: a real test parent, its real pool manager, real workers.

The parent of these tests has a name, a volume prefix and a home of its own (from the session
prefix); the real hal9000-parent and its workers are never touched. The tests run in file order and
share the parent; each one first puts the pool in the state it needs. Counts are read with the
docker SDK directly (labels), never through the collection's own listing. Waiting is always bounded
polling: the manager reacts to Docker events, so nothing here sleeps for its 10 s periodic check
except where a test is about that check.
"""

from __future__ import annotations

import json
import random
import subprocess
import threading
import time
from pathlib import Path

import pytest

from helpers import OWNER, Parent, exec_in, one_line_refusal, owned_project, remove_containers, started_parent, succeeded, wait_for

from ansible_collections.hal9000.dind.plugins.module_utils.docker_api import connect
from ansible_collections.hal9000.dind.plugins.module_utils.pool import claim
from ansible_collections.hal9000.dind.plugins.module_utils.workers import spawn_worker, worker_spec

CHECK_INTERVAL = 10  # the manager's periodic reconcile (POOL_CHECK_INTERVAL in the parent)


# ----------------------------------------------------------------------------- helpers ----

class Pool(Parent):
    """The module's pool parent (a started test parent) and readers of its state."""

    def __init__(self, parent):
        super().__init__(parent.client, parent.runner, parent.args)
        self.made = []  # claimed or cold workers the tests created (removed after each test)

    @property
    def pools_json(self):
        return self.home / "config" / "pools.json"

    @property
    def log_path(self):
        return self.home / "logs" / "pool-manager.log"

    def warm(self, pool=None):
        """Warm workers of this parent: running, unclaimed (name == warm-name), oldest first."""
        summaries = self.client.api.containers(filters={
            "label": ["io.hal9000.role=worker", f"io.hal9000.parent={self.name}"], "status": "running"})
        warm = []
        for summary in summaries:
            labels = summary.get("Labels") or {}
            name = summary["Names"][0].lstrip("/")
            if labels.get("io.hal9000.pool") and labels.get("io.hal9000.warm-name") == name:
                if pool is None or labels["io.hal9000.pool"] == pool:
                    warm.append({"id": summary["Id"], "name": name, "labels": labels, "created": summary["Created"]})
        return sorted(warm, key=lambda w: w["created"])

    def warm_ids(self, pool=None):
        return {w["id"] for w in self.warm(pool)}

    def coordinator(self, *args):
        return exec_in(self.client, self.name, ["coordinator", *args])

    def coordinator_ok(self, *args):
        code, out, err = self.coordinator(*args)
        assert code == 0, (args, out, err)
        return out

    def status(self):
        return json.loads(self.coordinator_ok("pool", "status", "--json"))

    def manager_status(self):
        """The manager's own record of its last pass (pid, counts, time), or {}."""
        code, out, _err = exec_in(self.client, self.name, ["cat", "/run/hal9000/pool-status.json"])
        return json.loads(out) if code == 0 and out.strip() else {}

    def one_more_pass(self, timeout=15):
        """Wake the manager and wait until it has finished a reconcile pass that began after now."""
        since = time.time()
        self.coordinator_ok("pool", "reload")
        return wait_for(lambda: self.manager_status().get("at", 0) > since + 0.1 and self.manager_status(),
                        timeout, "a reconcile pass of the pool manager")

    def configure(self, check_mode=False, **args):
        return self.runner.task("hal9000.dind.pool", {"parent": self.name, "hal9000_home": str(self.home), **args}, check_mode=check_mode)

    def worker(self, name, **args):
        self.made.append(name)
        return self.runner.task("hal9000.dind.worker", {"name": name, "parent": self.name, **args})

    def log_lines(self):
        return self.log_path.read_text(encoding="utf-8").splitlines()


# ---------------------------------------------------------------------------- fixtures ----

@pytest.fixture(scope="module")
def pool(docker_client, prefix, tmp_path_factory):
    """A parent of this module's own with its pool manager; it, its workers, volumes and home go at the end."""
    with started_parent(docker_client, tmp_path_factory, f"{prefix}-pool") as parent:
        yield Pool(parent)


@pytest.fixture
def fleet(pool, docker_client):
    """The pool parent; the claimed and cold workers a test made are removed afterwards."""
    yield pool
    remove_containers(docker_client, *pool.made)
    pool.made.clear()


@pytest.fixture
def project(tmp_path_factory):
    """A project directory owned by uid/gid 1000 with one file."""
    return owned_project(tmp_path_factory.mktemp("pool-project") / "webapp")


def generic(min_warm=2, max_warm=5, **extra):
    return dict({"min_warm_workers": min_warm, "max_warm_workers": max_warm}, **extra)


def settle(pool, count, name="generic", timeout=30):
    """Wait until ``name`` holds exactly ``count`` warm workers."""
    def exact():
        warm = pool.warm(name)
        return (warm,) if len(warm) == count else None  # a tuple: true even when the pool is empty

    return wait_for(exact, timeout, f"{count} warm workers in {name}")[0]


# ------------------------------------------------------------------------------- tests ----

def test_enabling_the_pool_gives_warm_workers_idempotent_with_check_mode(fleet):
    pool = fleet
    assert not pool.pools_json.exists()
    planned = pool.configure(check_mode=True, **generic())
    succeeded(planned)
    assert planned["changed"] is True
    assert "started the pool manager" in planned["actions"] and "wrote the pool settings" in planned["actions"]
    assert not pool.pools_json.exists()
    assert pool.warm() == []
    assert pool.status()["running"] is False

    began = time.monotonic()
    result = succeeded(pool.configure(**generic()))
    took = time.monotonic() - began
    assert result["changed"] is True and result["manager_running"] is True
    assert took < 45, took  # ansible-playbook itself included
    warm = pool.warm()
    assert len(warm) == 2, warm
    assert [p["warm"] for p in result["pools"]] == [2] and result["pools"][0]["name"] == "generic"
    parent = pool.inspect()
    for worker in warm:
        labels = worker["labels"]
        assert labels["io.hal9000.pool"] == "generic"
        assert labels["io.hal9000.warm-name"] == worker["name"] and worker["name"].startswith("hal9000-warm-")
        assert labels["io.hal9000.role"] == "worker" and labels["io.hal9000.managed"] == "true"
        assert labels["io.hal9000.parent-started"] == parent["State"]["StartedAt"]
        info = pool.client.api.inspect_container(worker["id"])
        assert info["State"]["Running"] is True and info["State"]["Paused"] is False  # runs idle, ready at once
        assert info["HostConfig"]["NetworkMode"] == f"container:{parent['Id']}"
        assert info["Config"]["User"] == "1001:1001"
        assert info["Config"]["Healthcheck"]["Test"] == ["NONE"]  # no health-check exec per idle worker
    settings = json.loads(pool.pools_json.read_text())
    assert settings["enabled"] is True
    assert [(p["name"], p["min"], p["max"]) for p in settings["pools"]] == [("generic", 2, 5)]
    assert oct(pool.pools_json.stat().st_mode & 0o777) == "0o600"

    again = succeeded(pool.configure(**generic()))
    assert again["changed"] is False and again["actions"] == [], again

    written = pool.pools_json.read_bytes()
    ids = pool.warm_ids()
    planned = succeeded(pool.configure(check_mode=True, **generic(min_warm=4)))
    assert planned["changed"] is True and planned["actions"] == ["wrote the pool settings"]
    assert pool.pools_json.read_bytes() == written
    pool.one_more_pass()
    assert pool.warm_ids() == ids


def test_invalid_settings_are_refused_in_one_line_and_change_nothing(fleet, project):
    pool = fleet
    settle(pool, 2)
    written = pool.pools_json.read_bytes()
    containers = {c["Id"] for c in pool.client.api.containers(all=True, filters={"label": f"io.hal9000.parent={pool.name}"})}
    base = {"parent": pool.name, "hal9000_home": str(pool.home)}
    results = pool.runner.tasks([
        ("hal9000.dind.pool", dict(base, min_warm_workers=3, max_warm_workers=2)),
        ("hal9000.dind.pool", dict(base, min_warm_workers=-1)),
        ("hal9000.dind.pool", dict(base, pools=[{"name": "my pool", "project_dir": project}])),
        ("hal9000.dind.pool", dict(base, pools=[{"name": "webapp", "project_dir": "relative/webapp"}])),
        ("hal9000.dind.pool", dict(base, idle_timeout=-5)),
    ])
    one_line_refusal(results[0], "min 3", "max 2")
    one_line_refusal(results[1], "-1", "whole number")
    one_line_refusal(results[2], "'my pool'", "pool name")
    one_line_refusal(results[3], "relative/webapp", "absolute path")
    one_line_refusal(results[4], "idle_timeout", "whole number")
    assert pool.pools_json.read_bytes() == written
    after = {c["Id"] for c in pool.client.api.containers(all=True, filters={"label": f"io.hal9000.parent={pool.name}"})}
    assert after == containers


def indexed(pool):
    """Container IDs in the warm workers' index (pool.warm_index) of the pool's home."""
    return {entry.name.split("-", 1)[1] for entry in (pool.home / "run" / "warm").glob("*/*")}


def test_claim_through_the_worker_module_and_the_cold_fallback(fleet, prefix):
    pool = fleet
    succeeded(pool.configure(**generic()))
    warm_before = {w["id"]: w["name"] for w in settle(pool, 2)}
    assert set(warm_before) <= indexed(pool), "the pool manager indexes the warm workers it makes"

    name = f"{prefix}-claimed-1"
    result = succeeded(pool.worker(name, from_pool=True))
    assert result["changed"] is True and result["claimed"] is True, result
    assert isinstance(result["claim_ms"], (int, float)) and 0 < result["claim_ms"] < 1000, result
    assert result["worker"]["name"] == name and result["worker"]["state"] == "running"
    assert result["worker"]["id"] in warm_before, (result["worker"]["id"], warm_before)
    info = pool.client.api.inspect_container(name)
    assert info["State"]["Running"] is True and info["State"]["Paused"] is False
    assert info["Config"]["Labels"]["io.hal9000.warm-name"] == warm_before[result["worker"]["id"]] != name
    assert "No warm worker" not in json.dumps(result.get("warnings", []))

    refilled = settle(pool, 2, timeout=10)
    assert result["worker"]["id"] not in {w["id"] for w in refilled}
    assert result["worker"]["id"] not in indexed(pool), "the claim dropped its index entry"

    ids = pool.warm_ids()
    cold = succeeded(pool.worker(f"{prefix}-cold-1", from_pool=True, env={"PROJECT_MODE": "special"}))
    assert cold["changed"] is True and cold["claimed"] is False, cold
    assert any("No warm worker fits" in w for w in cold.get("warnings", [])), cold
    assert cold["worker"]["state"] == "running" and cold["worker"]["id"] not in ids | set(warm_before)
    assert pool.warm_ids() == ids  # no warm worker was used up

    again = succeeded(pool.worker(name, from_pool=True))
    assert again["changed"] is False and again["claimed"] is False and again["worker"]["id"] == result["worker"]["id"]


def test_per_project_pool_gives_a_complete_worker(fleet, prefix, project):
    pool = fleet
    projects = [{"name": "webapp", "project_dir": project, "min": 1, "max": 2}]
    result = succeeded(pool.configure(**generic(), pools=projects))
    assert {p["name"]: p["warm"] for p in result["pools"]} == {"generic": 2, "webapp": 1}, result
    warm = settle(pool, 1, "webapp")[0]
    info = pool.client.api.inspect_container(warm["id"])
    assert info["Config"]["User"] == f"{OWNER}:{OWNER}"
    mounts = [m for m in info["Mounts"] if m["Destination"] == "/workspace"]
    assert len(mounts) == 1 and mounts[0]["Type"] == "bind" and mounts[0]["Source"] == project and mounts[0]["RW"]
    assert warm["labels"]["io.hal9000.project"] == project

    name = f"{prefix}-webapp-1"
    claimed = succeeded(pool.worker(name, project_dir=project, from_pool=True))
    assert claimed["claimed"] is True and claimed["worker"]["id"] == warm["id"], claimed
    code, out, err = exec_in(pool.client, name, ["cat", "/workspace/README.md"])
    assert (code, out) == (0, "hello from the host\n"), err
    code, out, err = exec_in(pool.client, name, ["id", "-u"])
    assert (code, out.strip()) == (0, str(OWNER)), err
    code, out, err = exec_in(pool.client, name, ["sh", "-c", "echo from the worker > /workspace/written.txt"])
    assert code == 0, (out, err)
    written = Path(project) / "written.txt"
    assert written.read_text() == "from the worker\n" and written.stat().st_uid == OWNER
    settle(pool, 1, "webapp", timeout=10)

    # The pool leaves the settings: its warm worker goes, the claimed one stays.
    succeeded(pool.configure(**generic()))
    settle(pool, 0, "webapp", timeout=CHECK_INTERVAL + 5)
    assert pool.client.api.inspect_container(name)["State"]["Running"] is True


def test_coordinator_claim_and_pool_commands(fleet, prefix):
    pool = fleet
    succeeded(pool.configure(**generic()))
    settle(pool, 2)
    status = pool.status()
    assert status["running"] is True and status["enabled"] is True
    assert [(p["name"], p["warm"], p["min"], p["max"]) for p in status["pools"]] == [("generic", 2, 2, 5)]

    warm_before = pool.warm_ids()
    name = f"{prefix}-coord-1"
    pool.made.append(name)
    claimed = json.loads(pool.coordinator_ok("claim", name, "--json"))
    assert claimed["name"] == name and claimed["claimed"] is True and claimed["pool"] == "generic", claimed
    assert isinstance(claimed["ms"], (int, float)) and claimed["ms"] < 1000
    info = pool.client.api.inspect_container(name)
    assert info["Id"] in warm_before and info["State"]["Running"] is True and info["State"]["Paused"] is False
    settle(pool, 2, timeout=10)

    out = pool.coordinator_ok("pool", "scale", "9")
    assert "exceeds max" in out and "(5)" in out, out
    settle(pool, 5, timeout=20)
    code, out, err = pool.coordinator("pool", "scale", "many")
    assert code != 0 and "Invalid scale target 'many'" in out + err, (code, out, err)
    pool.coordinator_ok("pool", "scale", "2")  # down: at once, not after the idle timeout
    settle(pool, 2, timeout=10)

    out = pool.coordinator_ok("pool", "warm")
    assert "ready in pool generic" in out, out
    assert len(pool.warm()) == 3

    before_cleanup = pool.warm_ids()
    out = pool.coordinator_ok("pool", "cleanup")
    assert "removed 3 warm worker(s)" in out, out
    assert not before_cleanup & pool.warm_ids()
    assert pool.client.api.inspect_container(name)["State"]["Running"] is True
    refilled = settle(pool, 2, timeout=10)
    assert not before_cleanup & {w["id"] for w in refilled}, "the manager refills with new workers"

    out = pool.coordinator_ok("pool", "stop")
    assert "stopped" in out, out
    assert pool.status()["running"] is False and pool.status()["enabled"] is False
    assert json.loads(pool.pools_json.read_text())["enabled"] is False
    assert pool.client.api.inspect_container(name)["State"]["Running"] is True
    assert len(pool.warm()) == 2  # stopping leaves the warm workers as they are

    out = pool.coordinator_ok("pool", "cleanup")
    assert "removed 2 warm worker(s)" in out, out
    assert pool.warm() == [] and pool.client.api.inspect_container(name)["State"]["Running"] is True
    cold_name = f"{prefix}-coord-cold"
    pool.made.append(cold_name)
    cold = json.loads(pool.coordinator_ok("claim", cold_name, "--json"))
    assert cold["claimed"] is False and cold["name"] == cold_name, cold
    assert pool.client.api.inspect_container(cold_name)["State"]["Running"] is True
    assert pool.warm() == []  # a cold spawn is never counted (or handed out) as a warm worker
    code, out, err = pool.coordinator("claim", "bad name", "--json")
    assert code != 0 and "Invalid worker name" in out + err, (out, err)

    out = pool.coordinator_ok("pool", "start")
    assert "Pool manager started" in out, out
    assert pool.status()["enabled"] is True
    settle(pool, 2, timeout=15)
    assert wait_for(lambda: pool.status()["running"], 10, "the manager running")


def test_concurrent_claims_against_a_pool_of_five(fleet, prefix):
    """Ten claimers at once, half through the library on the host, half through the coordinator in the parent:
    both take the claim lock in the same home (the parent's bind mount), so no warm worker goes twice."""
    pool = fleet
    succeeded(pool.configure(**generic(min_warm=5, max_warm=5)))
    settle(pool, 5)
    # No refill during the burst: exactly five warm workers exist for ten claimers.
    pool.coordinator_ok("pool", "stop")
    warm = {w["id"] for w in pool.warm()}
    assert len(warm) == 5
    names = [f"{prefix}-burst-{i}" for i in range(10)]
    pool.made.extend(names)
    results, errors = {}, []
    barrier = threading.Barrier(len(names))

    def host_claimer(name):
        try:
            client = connect(timeout=60)
            spec = worker_spec(name=name, parent=pool.name)  # exactly what the worker module builds
            barrier.wait()
            time.sleep(random.uniform(0, 0.5))  # spread over the coordinators' start-up, so both kinds interleave
            claimed_id = claim(client, spec, name, str(pool.home))
            results[name] = ("claimed", claimed_id) if claimed_id else ("cold", spawn_worker(client, spec)[0])
        except Exception as exc:  # reported below; a thread must not die silently
            errors.append(f"{name}: {exc!r}")

    def parent_claimer(name):
        try:
            client = connect(timeout=60)
            barrier.wait()
            code, out, err = exec_in(client, pool.name, ["coordinator", "claim", name, "--pool", "generic", "--json"])
            assert code == 0, (out, err)
            how = "claimed" if json.loads(out)["claimed"] else "cold"
            results[name] = (how, client.api.inspect_container(name)["Id"])
        except Exception as exc:  # reported below
            errors.append(f"{name}: {exc!r}")

    threads = [threading.Thread(target=host_claimer if index % 2 else parent_claimer, args=(name,))
               for index, name in enumerate(names)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == [] and len(results) == 10, (errors, results)
    claimed = {name: cid for name, (how, cid) in results.items() if how == "claimed"}
    cold = {name: cid for name, (how, cid) in results.items() if how == "cold"}
    assert len(claimed) == 5 and len(cold) == 5, results
    assert set(claimed.values()) == warm  # each warm worker went to exactly one claimer
    assert not set(cold.values()) & warm
    for name in names:
        info = pool.client.api.inspect_container(name)
        assert info["State"]["Running"] is True and info["State"]["Paused"] is False and info["Name"] == f"/{name}"
        assert info["Id"] == (claimed.get(name) or cold.get(name))
    assert pool.warm() == []

    pool.coordinator_ok("pool", "start")
    refilled = settle(pool, 5, timeout=30)
    assert not {w["id"] for w in refilled} & warm


def test_killed_warm_workers_are_replaced(fleet):
    pool = fleet
    succeeded(pool.configure(**generic(min_warm=3, max_warm=3)))
    warm = settle(pool, 3, timeout=15)  # five from before: two above the new maximum go at once
    killed = [w["name"] for w in warm[:2]]
    proc = subprocess.run(["docker", "rm", "-f", "-v", *killed], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    refilled = settle(pool, 3, timeout=10)
    assert not set(killed) & {w["name"] for w in refilled}


def test_parent_restart_leaves_exactly_the_configured_warm_workers(fleet):
    pool = fleet
    succeeded(pool.configure(**generic(min_warm=3, max_warm=3)))
    old = {w["name"] for w in settle(pool, 3)}
    restarted = succeeded(pool.runner.task("hal9000.dind.parent", dict(pool.args, state="restarted", force=True)))
    assert restarted["changed"] is True and restarted["parent"]["chromadb_ready"] is True, restarted
    started = pool.inspect()["State"]["StartedAt"]

    def fresh():
        warm = pool.warm()
        return len(warm) == 3 and all(w["labels"]["io.hal9000.parent-started"] == started for w in warm) and warm

    warm = wait_for(fresh, 30, "three warm workers of the new parent start")
    assert not old & {w["name"] for w in warm}
    pool.one_more_pass()
    again = pool.warm()
    assert {w["id"] for w in again} == {w["id"] for w in warm}, "exactly the configured number, no duplicates"
    parent_id = pool.inspect()["Id"]
    for worker in again:
        assert pool.client.api.inspect_container(worker["id"])["HostConfig"]["NetworkMode"] == f"container:{parent_id}"


def test_idle_timeout_trims_to_the_minimum_and_no_lower(fleet):
    pool = fleet
    succeeded(pool.configure(**generic(min_warm=2, max_warm=5, idle_timeout=3)))
    settle(pool, 2, timeout=CHECK_INTERVAL + 10)  # three from before: idle, trimmed to the new minimum
    pool.coordinator_ok("pool", "scale", "4")
    settle(pool, 4, timeout=15)
    seen = []

    def trimmed():
        seen.append(len(pool.warm()))
        return seen[-1] == 2

    wait_for(trimmed, 3 + CHECK_INTERVAL + 10, "the idle pool back at its minimum")
    assert min(seen) >= 2, seen
    pool.one_more_pass()
    assert len(pool.warm()) == 2
    assert any("idle for 3 s above the minimum of 2" in line for line in pool.log_lines())
    succeeded(pool.configure(**generic()))


def test_a_restarted_manager_adopts_the_warm_workers(fleet):
    pool = fleet
    succeeded(pool.configure(**generic()))
    ids = {w["id"] for w in settle(pool, 2, timeout=CHECK_INTERVAL + 10)}
    pool.coordinator_ok("pool", "stop")
    assert pool.status()["running"] is False
    out = pool.coordinator_ok("pool", "start")
    pid = int(out.split("pid ")[1].rstrip(")\n"))
    record = wait_for(lambda: pool.manager_status().get("pid") == pid and pool.manager_status(), 15, "the new manager's first pass")
    assert record["warm"] == {"generic": 2}
    pool.one_more_pass()
    assert pool.warm_ids() == ids
    lines = pool.log_lines()
    last_start = max(i for i, line in enumerate(lines) if "pool manager started" in line)
    assert not [line for line in lines[last_start:] if "ready" in line or "removed" in line], lines[last_start:]


def test_the_manager_log_records_the_creations(fleet):
    pool = fleet
    assert pool.log_path.is_file()
    text = pool.log_path.read_text(encoding="utf-8")
    for worker in pool.warm():
        assert f"pool generic: warm worker {worker['name']} ready" in text
    assert "removed warm worker" in text and "pool manager stopped" in text
