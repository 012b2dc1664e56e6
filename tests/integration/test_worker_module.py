"""hal9000.dind.worker against the real Docker Engine, a real test parent and real workers.

Every promise is read from `docker inspect` or from inside a running worker. The test parent
has a name, a volume prefix and a home of its own (from the session prefix); the real
hal9000-parent is never touched. Each test removes the workers it made, and the parent
fixture removes every container labelled as a worker of the test parent.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path

import pytest

from helpers import (
    OWNER, exec_in, inspect_or_none, one_line_refusal, owned_project, remove_containers, snapshot, stable, started_parent,
    succeeded, wait_for,
)

MODULE = "hal9000.dind.worker"
GIB = 1024 ** 3
# The parent's MCP relay, on its loopback: a worker reaches it only through the shared network namespace.
# (ChromaDB is on that loopback too, but only root may connect to it: tests/integration/test_relay.py.)
HEARTBEAT = (
    'exec 3<>/dev/tcp/127.0.0.1/8765; printf "GET /health HTTP/1.0\\r\\n\\r\\n" >&3; head -1 <&3'
)
SOCKETS = ("/var/run/docker.sock", "/run/docker.sock")


# ----------------------------------------------------------------------------- helpers ----

def created_since(client, before, prefix, parent):
    """Containers and volumes that appeared since ``before`` and could have come from these tests.

    Other sessions on the host (other developers' tests, pool managers) create and remove objects
    meanwhile, so only what the worker module could have made here counts: names with this session's
    prefix, workers labelled with the test parent, and generated worker names of parent-less workers.
    """
    after = snapshot(client)
    containers = []
    for name in sorted(set(after[0]) - set(before[0])):
        labels = ((inspect_or_none(client, name) or {}).get("Config") or {}).get("Labels") or {}
        generated = re.fullmatch(r"hal9000-worker-[0-9a-f]{10}", name) and labels.get("io.hal9000.parent", "") == ""
        if name.startswith(prefix) or labels.get("io.hal9000.parent") == parent or generated:
            containers.append(name)
    volumes = [v for v in sorted(set(after[1]) - set(before[1])) if v.startswith(prefix)]
    return containers, volumes


def heartbeat(client, name):
    """The status line of the relay's /health, seen from inside the worker, once the relay answers 200."""
    def answered():
        code, out, err = exec_in(client, name, ["bash", "-c", HEARTBEAT])
        return out.strip() if code == 0 and " 200 " in out else None
    return wait_for(answered, 120, f"the parent's relay to answer inside {name}")


# ---------------------------------------------------------------------------- fixtures ----

@pytest.fixture(scope="module")
def parent(docker_client, prefix, tmp_path_factory):
    """A parent of this module's own (a helpers.Parent); it, its workers, volumes and home go at the end."""
    with started_parent(docker_client, tmp_path_factory, f"{prefix}-worker") as started:
        yield started


@pytest.fixture
def project(tmp_path_factory):
    """A project directory owned by uid/gid 1000, and a symlink to it."""
    base = tmp_path_factory.mktemp("project")
    real = owned_project(base / "real-project")
    link = base / "link-to-project"
    link.symlink_to(real)
    return {"real": real, "link": str(link)}


def spawn(ansible, parent, made, name, **args):
    made.append(name)
    return ansible.task(MODULE, {"name": name, "parent": parent.name, **args})


def started_ok(result):
    assert succeeded(result)["worker"]["state"] == "running", result
    return result


# ------------------------------------------------------------------------------- spawn ----

def test_spawn_on_a_project_shares_the_parent_network_with_default_limits(ansible, docker_client, parent, made, prefix, project):
    name = f"{prefix}-w-spawn"
    result = started_ok(spawn(ansible, parent, made, name, project_dir=project["link"]))
    assert result["changed"] is True
    info = docker_client.api.inspect_container(name)
    assert info["State"]["Running"] is True
    assert info["HostConfig"]["NetworkMode"] == f"container:{parent.id}"
    workspace = [m for m in info["Mounts"] if m["Destination"] == "/workspace"]
    assert len(workspace) == 1 and workspace[0]["Type"] == "bind" and workspace[0]["RW"] is True
    assert workspace[0]["Source"] == project["real"] != project["link"]
    host = info["HostConfig"]
    assert host["Memory"] == 4 * GIB and host["MemorySwap"] == 4 * GIB
    assert host["CpuQuota"] / host["CpuPeriod"] == 2
    assert host["PidsLimit"] == 100
    assert result["worker"]["limits"] == {"memory": 4 * GIB, "cpus": 2.0, "pids_limit": 100}
    assert result["worker"]["project"] == project["real"]
    assert result["worker"]["attach_command"] == f"docker exec -it {name} claude"


def test_limit_overrides_and_no_limits(ansible, docker_client, parent, made, prefix):
    big = f"{prefix}-w-big"
    started_ok(spawn(ansible, parent, made, big, memory="8g", cpus="1.5", pids_limit="200"))
    host = docker_client.api.inspect_container(big)["HostConfig"]
    assert host["Memory"] == 8 * GIB and host["MemorySwap"] == 8 * GIB
    assert (host["CpuQuota"], host["CpuPeriod"]) == (150000, 100000)
    assert host["PidsLimit"] == 200

    free = f"{prefix}-w-free"
    result = started_ok(spawn(ansible, parent, made, free, no_limits=True))
    host = docker_client.api.inspect_container(free)["HostConfig"]
    assert host["Memory"] == 0 and host["MemorySwap"] in (0, -1)
    assert host["CpuQuota"] == 0 and host["NanoCpus"] == 0
    assert host["PidsLimit"] in (None, 0, -1)
    assert result["worker"]["limits"] == {"memory": None, "cpus": None, "pids_limit": None}


def test_environment_variables_give_the_default_limits(ansible, docker_client, parent, made, prefix):
    ansible.env.update(WORKER_MEMORY="512m", WORKER_CPUS="1", WORKER_PIDS_LIMIT="77")
    name = f"{prefix}-w-envdef"
    started_ok(spawn(ansible, parent, made, name))
    host = docker_client.api.inspect_container(name)["HostConfig"]
    assert host["Memory"] == 512 * 1024 ** 2 and host["MemorySwap"] == 512 * 1024 ** 2
    assert host["CpuQuota"] / host["CpuPeriod"] == 1
    assert host["PidsLimit"] == 77
    # An explicit option still wins over the environment.
    explicit = f"{prefix}-w-envexp"
    started_ok(spawn(ansible, parent, made, explicit, memory="1g"))
    host = docker_client.api.inspect_container(explicit)["HostConfig"]
    assert host["Memory"] == GIB and host["PidsLimit"] == 77


# ------------------------------------------------------------------------- idempotence ----

def test_same_options_change_nothing_and_limits_change_in_place(ansible, docker_client, parent, made, prefix, project):
    name = f"{prefix}-w-idem"
    args = {"project_dir": project["real"], "auto_remove": False}
    first = started_ok(spawn(ansible, parent, made, name, **args))
    original = docker_client.api.inspect_container(name)
    assert first["worker"]["id"] == original["Id"]

    again = started_ok(spawn(ansible, parent, made, name, **args))
    assert again["changed"] is False and again["actions"] == [], again
    assert docker_client.api.inspect_container(name)["Id"] == original["Id"]

    bigger = started_ok(spawn(ansible, parent, made, name, memory="8g", cpus="1.5", pids_limit="200", **args))
    assert bigger["changed"] is True
    assert bigger["actions"] == [f"updated limits of {name} in place"], bigger
    updated = docker_client.api.inspect_container(name)
    assert updated["Id"] == original["Id"]
    assert updated["State"]["StartedAt"] == original["State"]["StartedAt"], "updated in place, not restarted"
    assert updated["State"]["Running"] is True
    host = updated["HostConfig"]
    assert (host["Memory"], host["MemorySwap"], host["CpuQuota"], host["CpuPeriod"], host["PidsLimit"]) == (
        8 * GIB, 8 * GIB, 150000, 100000, 200)
    same = started_ok(spawn(ansible, parent, made, name, memory="8g", cpus="1.5", pids_limit="200", **args))
    assert same["changed"] is False, same

    other = started_ok(spawn(ansible, parent, made, name, memory="8g", cpus="1.5", pids_limit="200",
                             env={"HAL9000_TEST": "1"}, **args))
    assert other["changed"] is True
    assert any(a.startswith(f"recreated {name} (options changed") for a in other["actions"]), other
    recreated = docker_client.api.inspect_container(name)
    assert recreated["Id"] != original["Id"]
    assert "HAL9000_TEST=1" in recreated["Config"]["Env"]


def test_check_mode_changes_nothing(ansible, docker_client, parent, made, prefix):
    name = f"{prefix}-w-check"
    started_ok(spawn(ansible, parent, made, name, auto_remove=False))
    before = stable(docker_client.api.inspect_container(name))
    for args in ({"env": {"HAL9000_TEST": "2"}}, {"memory": "2g", "pids_limit": "300"}):
        made.append(name)
        result = ansible.task(MODULE, {"name": name, "parent": parent.name, "auto_remove": False, **args}, check_mode=True)
        assert succeeded(result)["changed"] is True and result["actions"], result
        assert stable(docker_client.api.inspect_container(name)) == before
    for state in ("stopped", "absent"):
        result = ansible.task(MODULE, {"name": name, "state": state}, check_mode=True)
        assert result["changed"] is True, result
        assert stable(docker_client.api.inspect_container(name)) == before

    fresh = f"{prefix}-w-check-new"
    result = ansible.task(MODULE, {"name": fresh, "parent": parent.name}, check_mode=True)
    assert result["changed"] is True and result["actions"] == [f"started {fresh}"], result
    assert inspect_or_none(docker_client, fresh) is None


def test_diff_mode_shows_before_and_after(ansible, docker_client, parent, made, prefix):
    name = f"{prefix}-w-diff"
    made.append(name)
    created = ansible.task(MODULE, {"name": name, "parent": parent.name, "auto_remove": False}, diff=True)
    assert created["diff"]["before"] == {}
    assert created["diff"]["after"]["state"] == "running"
    assert created["diff"]["after"]["limits"] == {"memory": 4 * GIB, "cpus": 2.0, "pids_limit": 100}
    assert created["diff"]["after"]["network_mode"] == f"container:{parent.id}"

    grown = ansible.task(MODULE, {"name": name, "parent": parent.name, "auto_remove": False, "memory": "6g"}, diff=True)
    assert grown["diff"]["before"]["limits"]["memory"] == 4 * GIB
    assert grown["diff"]["after"]["limits"]["memory"] == 6 * GIB

    planned = ansible.task(MODULE, {"name": name, "parent": parent.name, "auto_remove": False, "memory": "5g"},
                           diff=True, check_mode=True)
    assert planned["diff"]["before"]["limits"]["memory"] == 6 * GIB
    # A check run's diff has the shape of a real run's: only the memory differs from before.
    assert planned["diff"]["after"] == dict(planned["diff"]["before"], limits=dict(planned["diff"]["before"]["limits"], memory=5 * GIB))
    fresh = ansible.task(MODULE, {"name": f"{name}-new", "parent": parent.name}, diff=True, check_mode=True)
    assert fresh["diff"]["after"] == created["diff"]["after"], fresh

    recreated = ansible.task(MODULE, {"name": name, "parent": parent.name, "auto_remove": False, "memory": "6g",
                                      "user": "1001:1001", "env": {"A": "b"}}, diff=True)
    assert recreated["diff"]["before"]["state"] == "running", "the diff shows the worker that was replaced"
    assert recreated["diff"]["after"]["state"] == "running"

    removed = ansible.task(MODULE, {"name": name, "state": "absent"}, diff=True)
    assert removed["diff"]["before"]["state"] == "running"
    assert removed["diff"]["after"] == {}


# --------------------------------------------------------------------------- hardening ----

def test_hardening_is_visible_in_inspect_and_inside(ansible, docker_client, parent, made, prefix, project):
    name = f"{prefix}-w-hard"
    started_ok(spawn(ansible, parent, made, name, project_dir=project["real"]))
    info = docker_client.api.inspect_container(name)
    host = info["HostConfig"]
    assert host["CapDrop"] == ["ALL"] and not host["CapAdd"]
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert not any("seccomp=unconfined" in opt or "apparmor=unconfined" in opt for opt in host["SecurityOpt"])
    assert host["Privileged"] is False
    uid = info["Config"]["User"].split(":")[0]
    assert uid.isdigit() and int(uid) != 0 and info["Config"]["User"] == f"{OWNER}:{OWNER}"
    for mount in info["Mounts"]:
        assert os.path.realpath(mount.get("Source") or "/nonexistent") not in SOCKETS, mount
        assert mount["Destination"] not in SOCKETS, mount
    assert host["ReadonlyRootfs"] is False

    code, status, err = exec_in(docker_client, name, ["cat", "/proc/1/status"])
    assert code == 0, err
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    for cap in ("CapEff", "CapPrm", "CapBnd", "CapAmb"):
        assert int(fields[cap], 16) == 0, (cap, fields[cap])
    assert fields["NoNewPrivs"].strip() == "1"
    assert fields["Uid"].split()[0] == str(OWNER)
    assert fields["Seccomp"].strip() == "2", "Docker's default seccomp profile is in force"

    code, out, err = exec_in(docker_client, name, ["bash", "-c", "ls /var/run/docker.sock /run/docker.sock"])
    assert code != 0 and "docker.sock" in err


def test_read_only_root_keeps_tmp_and_home_writable(ansible, docker_client, parent, made, prefix):
    name = f"{prefix}-w-ro"
    started_ok(spawn(ansible, parent, made, name, read_only=True))
    assert docker_client.api.inspect_container(name)["HostConfig"]["ReadonlyRootfs"] is True
    code, out, err = exec_in(docker_client, name, ["bash", "-c", "echo x > /tmp/probe && cat /tmp/probe"])
    assert (code, out.strip()) == (0, "x"), err
    code, out, err = exec_in(docker_client, name, ["bash", "-c", "echo x > $HOME/probe && cat $HOME/probe"])
    assert (code, out.strip()) == (0, "x"), err
    code, out, err = exec_in(docker_client, name, ["bash", "-c", "echo x > /usr/local/probe"])
    assert code != 0 and "Read-only file system" in err


# ----------------------------------------------------------------------------- API key ----

def test_api_key_is_mounted_never_in_the_environment(ansible, docker_client, parent, made, prefix, project, tmp_path):
    key = f"sk-ant-test-{uuid.uuid4().hex}"
    key_file = tmp_path / "anthropic_key"
    key_file.write_text(key)
    os.chown(key_file, OWNER, OWNER)
    key_file.chmod(0o600)
    name = f"{prefix}-w-key"
    ansible.env["ANSIBLE_VERBOSITY"] = "3"  # every result and argument printed: the key must still not appear
    made.append(name)
    result = ansible.task(MODULE, {"name": name, "parent": parent.name, "project_dir": project["real"],
                                   "api_key_file": str(key_file)}, diff=True)
    started_ok(result)
    assert key not in result["_stdout"]
    assert key not in json.dumps(result)
    info = docker_client.api.inspect_container(name)
    assert key not in json.dumps(info)
    secret = [m for m in info["Mounts"] if m["Destination"] == "/run/secrets/anthropic_key"]
    assert len(secret) == 1 and secret[0]["RW"] is False and secret[0]["Source"] == str(key_file)

    code, out, err = exec_in(docker_client, name, ["cat", "/run/secrets/anthropic_key"])
    assert (code, out) == (0, key), err
    code, out, err = exec_in(docker_client, name, ["bash", "-c", "echo x > /run/secrets/anthropic_key"])
    assert code != 0 and "Read-only file system" in err

    def read_settings():
        status, text, _err = exec_in(docker_client, name, ["bash", "-c", "cat $CLAUDE_HOME/settings.json"])
        return text if status == 0 else None

    settings = wait_for(read_settings, 10, "settings.json in $CLAUDE_HOME (the entrypoint writes it)")
    assert json.loads(settings)["apiKeyHelper"] == "cat /run/secrets/anthropic_key"
    for argv in (["env"], ["cat", "/proc/1/environ"]):
        code, out, err = exec_in(docker_client, name, argv)
        assert code == 0 and "HOME=" in out and key not in out, (argv, err)
    assert key.encode() not in docker_client.api.logs(name)
    assert key_file.read_text() == key and (key_file.stat().st_mode & 0o777) == 0o600


def test_api_key_file_readable_by_others_and_key_in_env_are_refused(ansible, docker_client, parent, prefix, tmp_path):
    key_file = tmp_path / "open_key"
    key_file.write_text("sk-ant-test-open")
    os.chown(key_file, OWNER, OWNER)
    key_file.chmod(0o644)
    name = f"{prefix}-w-openkey"
    before = snapshot(docker_client)
    one_line_refusal(ansible.task(MODULE, {"name": name, "parent": parent.name, "api_key_file": str(key_file)}),
                     "0644", "chmod 600")
    one_line_refusal(ansible.task(MODULE, {"name": name, "parent": parent.name,
                                           "env": {"ANTHROPIC_API_KEY": "sk-ant-test-env"}}),
                     "ANTHROPIC_API_KEY", "api_key_file")
    assert inspect_or_none(docker_client, name) is None
    assert created_since(docker_client, before, prefix, parent.name) == ([], [])


# ------------------------------------------------------------------ inside real workers ----

def test_inside_a_worker_chromadb_workspace_owner_and_claude(ansible, docker_client, parent, made, prefix, project):
    name = f"{prefix}-w-inside"
    started_ok(spawn(ansible, parent, made, name, project_dir=project["real"]))
    assert heartbeat(docker_client, name) == "HTTP/1.1 200 OK"

    code, out, err = exec_in(docker_client, name, ["cat", "/workspace/README.md"])
    assert (code, out) == (0, "hello from the host\n"), err
    code, out, err = exec_in(docker_client, name, ["bash", "-c", "id -u; id -g; echo written-inside > /workspace/from-worker.txt"])
    assert code == 0, err
    assert out.split() == [str(OWNER), str(OWNER)], "runs as the project's owner, not root and not the image's 1001"
    written = Path(project["real"]) / "from-worker.txt"
    assert written.read_text() == "written-inside\n"
    assert (written.stat().st_uid, written.stat().st_gid) == (OWNER, OWNER)

    code, out, err = exec_in(docker_client, name, ["claude", "--version"])
    assert code == 0 and "(Claude Code)" in out, (out, err)


def test_fork_bomb_stops_at_the_pids_limit(ansible, docker_client, parent, made, prefix):
    name = f"{prefix}-w-forkbomb"
    started_ok(spawn(ansible, parent, made, name, pids_limit="50"))
    assert docker_client.api.inspect_container(name)["HostConfig"]["PidsLimit"] == 50
    bomb = "for i in $(seq 200); do sleep 60 & done; wait"
    code, out, err = exec_in(docker_client, name, ["timeout", "90", "bash", "-c", bomb])
    assert code != 0
    assert "Resource temporarily unavailable" in err, err[-500:]
    # The sleeps that did start still run: the container holds at most the limit, and the bomb reached it.
    processes = docker_client.api.top(name)["Processes"]
    assert 40 <= len(processes) <= 50, len(processes)
    pids = docker_client.api.stats(name, stream=False)["pids_stats"]
    assert pids["limit"] == 50 and pids["current"] <= 50, pids
    assert docker_client.api.inspect_container(name)["State"]["Running"] is True


def test_memory_hog_is_killed_and_the_parent_stays_healthy(ansible, docker_client, parent, made, prefix):
    name = f"{prefix}-w-hog"
    started_ok(spawn(ansible, parent, made, name, memory="64m"))
    host = docker_client.api.inspect_container(name)["HostConfig"]
    assert host["Memory"] == 64 * 1024 ** 2 == host["MemorySwap"]
    code, out, err = exec_in(docker_client, name, ["bash", "-c", "head -c 300m /dev/zero | tail; echo tail=$?"])
    assert "tail=137" in out, (code, out, err)
    code, out, err = exec_in(docker_client, name, ["bash", "-c", "s=x; while :; do s=$s$s; done"])
    assert code == 137, (code, err)
    assert docker_client.api.inspect_container(name)["State"]["Running"] is True, "only the hog died"

    health = wait_for(
        lambda: (docker_client.api.inspect_container(parent.name)["State"].get("Health") or {}).get("Status") == "healthy",
        40, "the parent's health check",
    )
    assert health is True
    assert docker_client.api.inspect_container(parent.name)["State"]["Running"] is True
    assert heartbeat(docker_client, name) == "HTTP/1.1 200 OK"
    info = ansible.task("hal9000.dind.info", {"parent": parent.name, "volume_prefix": parent.args["volume_prefix"]})
    assert info["parent"]["state"] == "running" and info["parent"]["chromadb_ready"] is True, info["parent"]


# ------------------------------------------------------------------------------ legacy ----

def test_legacy_mode_runs_without_a_parent_and_is_deprecated(ansible, docker_client, made, prefix):
    name = f"{prefix}-w-legacy"
    made.append(name)
    result = started_ok(ansible.task(MODULE, {"name": name, "mode": "legacy", "parent": f"{prefix}-no-such-parent"}))
    info = docker_client.api.inspect_container(name)
    assert info["HostConfig"]["NetworkMode"] in ("bridge", "default")
    assert result["worker"]["network_mode"] == info["HostConfig"]["NetworkMode"]
    assert info["HostConfig"]["CapDrop"] == ["ALL"], "legacy workers are hardened too"
    deprecations = result.get("deprecations") or []
    assert any("1.0" in d.get("version", "") or "1.0" in d.get("msg", "") for d in deprecations), result
    assert any("legacy" in d.get("msg", "") for d in deprecations)


# ------------------------------------------------------------------ stale network repair ----

def test_worker_of_a_recreated_parent_is_reported_and_repaired(ansible, docker_client, parent, made, prefix):
    name = f"{prefix}-w-stale"
    args = {"auto_remove": False}
    started_ok(spawn(ansible, parent, made, name, **args))
    old_parent = parent.id
    assert docker_client.api.inspect_container(name)["HostConfig"]["NetworkMode"] == f"container:{old_parent}"

    recreated = ansible.task("hal9000.dind.parent", dict(parent.args, force=True, idle_timeout=301))
    assert succeeded(recreated)["changed"] is True and name in recreated["affected_workers"], recreated
    new_parent = parent.id
    assert new_parent != old_parent

    info = ansible.task("hal9000.dind.info", {"parent": parent.name, "volume_prefix": parent.args["volume_prefix"]})
    mine = [w for w in info["workers"] if w["name"] == name]
    assert len(mine) == 1 and mine[0]["network_ok"] is False, info["workers"]
    assert info["counts"]["stale_network"] >= 1

    repaired = started_ok(spawn(ansible, parent, made, name, **args))
    assert repaired["changed"] is True
    assert any("parent network is stale" in a for a in repaired["actions"]), repaired
    assert docker_client.api.inspect_container(name)["HostConfig"]["NetworkMode"] == f"container:{new_parent}"
    assert heartbeat(docker_client, name) == "HTTP/1.1 200 OK"
    info = ansible.task("hal9000.dind.info", {"parent": parent.name, "volume_prefix": parent.args["volume_prefix"]})
    assert [w["network_ok"] for w in info["workers"] if w["name"] == name] == [True]
    again = started_ok(spawn(ansible, parent, made, name, **args))
    assert again["changed"] is False, again


# ------------------------------------------------------------------------------ states ----

def test_stopped_and_absent(ansible, docker_client, parent, made, prefix):
    removed_on_stop = f"{prefix}-w-stop-rm"
    started_ok(spawn(ansible, parent, made, removed_on_stop))
    volume = [m["Name"] for m in docker_client.api.inspect_container(removed_on_stop)["Mounts"]
              if m["Destination"] == "/workspace"][0]
    stopped = ansible.task(MODULE, {"name": removed_on_stop, "state": "stopped"})
    assert stopped["changed"] is True and stopped["actions"] == [f"stopped {removed_on_stop} (removed: auto_remove)"], stopped
    wait_for(lambda: inspect_or_none(docker_client, removed_on_stop) is None, 15, "the auto-removed worker to go")
    wait_for(lambda: volume not in snapshot(docker_client)[1], 15, "its /workspace volume to go")
    assert ansible.task(MODULE, {"name": removed_on_stop, "state": "stopped"})["changed"] is False

    kept = f"{prefix}-w-stop-keep"
    started_ok(spawn(ansible, parent, made, kept, auto_remove=False))
    volume = [m["Name"] for m in docker_client.api.inspect_container(kept)["Mounts"] if m["Destination"] == "/workspace"][0]
    stopped = ansible.task(MODULE, {"name": kept, "state": "stopped"})
    assert stopped["changed"] is True and stopped["worker"]["state"] == "exited", stopped
    assert docker_client.api.inspect_container(kept)["State"]["Status"] == "exited"
    assert ansible.task(MODULE, {"name": kept, "state": "stopped"})["changed"] is False
    restarted = started_ok(spawn(ansible, parent, made, kept, auto_remove=False))
    assert restarted["actions"] == [f"started {kept}"], restarted

    gone = ansible.task(MODULE, {"name": kept, "state": "absent"})
    assert gone["changed"] is True and gone["worker"] == {"name": kept, "state": "absent"}, gone
    assert inspect_or_none(docker_client, kept) is None
    assert volume not in snapshot(docker_client)[1], "the per-worker /workspace volume goes with the worker"
    assert ansible.task(MODULE, {"name": kept, "state": "absent"})["changed"] is False


def test_generated_names_differ_within_one_second(ansible, docker_client, parent, made):
    results = ansible.tasks([(MODULE, {"parent": parent.name}), (MODULE, {"parent": parent.name})])
    names = [r.get("worker", {}).get("name") for r in results]
    made.extend(n for n in names if n)
    for result in results:
        started_ok(result)
        assert re.fullmatch(r"hal9000-worker-[0-9a-f]{10}", result["worker"]["name"]), result["worker"]["name"]
    assert names[0] != names[1]
    created = [docker_client.api.inspect_container(n)["Created"] for n in names]
    assert all(docker_client.api.inspect_container(n)["State"]["Running"] for n in names), created


# ----------------------------------------------------------------------------- refusals ----

@pytest.fixture(scope="module")
def stopped_parent(docker_client, prefix, tmp_path_factory):
    """A real parent that was started and then stopped (the daemon is down)."""
    with started_parent(docker_client, tmp_path_factory, f"{prefix}-stopped") as started:
        stopped = started.runner.task("hal9000.dind.parent", dict(started.args, state="stopped"))
        assert stopped.get("failed") is False and stopped["changed"] is True, stopped
        assert started.inspect()["State"]["Running"] is False
        yield started.name


@pytest.fixture(scope="module")
def bad_paths(tmp_path_factory):
    base = tmp_path_factory.mktemp("bad-paths")
    (base / "a-file").write_text("not a directory\n")
    (base / "to-etc").symlink_to("/etc")
    (base / "to-root").symlink_to("/")
    (base / "to-socket").symlink_to("/var/run/docker.sock")
    return base


BAD = [
    ("space-name", {"name": "a b"}, ["Invalid worker name"]),
    ("slash-name", {"name": "a/b"}, ["Invalid worker name"]),
    ("subshell-name", {"name": "$(id)"}, ["Invalid worker name"]),
    ("semicolon-name", {"name": "a;b"}, ["Invalid worker name"]),
    ("relative", {"project_dir": "relative/project"}, ["absolute path"]),
    ("missing", {"project_dir": "{base}/no-such-dir"}, ["does not exist"]),
    ("file", {"project_dir": "{base}/a-file"}, ["not a directory"]),
    ("root", {"project_dir": "/"}, ["system location"]),
    ("root-link", {"project_dir": "{base}/to-root"}, ["system location"]),
    ("etc", {"project_dir": "/etc"}, ["system location"]),
    ("etc-link", {"project_dir": "{base}/to-etc"}, ["system location"]),
    ("etc-sub", {"project_dir": "/etc/ssl"}, ["system location"]),
    ("var-run", {"project_dir": "/var/run"}, ["system location"]),
    ("socket", {"project_dir": "/var/run/docker.sock"}, ["project_dir"]),
    ("socket-link", {"project_dir": "{base}/to-socket"}, ["project_dir"]),
    ("memory-unit", {"memory": "4x"}, ["Invalid memory size"]),
    ("memory-zero", {"memory": "0"}, ["Invalid memory size"]),
    ("memory-negative", {"memory": "-1g"}, ["Invalid memory size"]),
    ("cpus-zero", {"cpus": 0}, ["Invalid cpus"]),
    ("cpus-negative", {"cpus": -1}, ["Invalid cpus"]),
    ("pids-zero", {"pids_limit": 0}, ["Invalid pids_limit"]),
    ("pids-negative", {"pids_limit": -5}, ["Invalid pids_limit"]),
    ("flavour", {"flavour": "huge"}, ["flavour", "minimal", "ultramin"]),
    ("missing-parent", {"parent": "{prefix}-no-such-parent"}, ["is not running", "start the daemon first"]),
    ("stopped-parent", {"parent": "{stopped}"}, ["is not running", "start the daemon first"]),
]


@pytest.mark.parametrize("case, args, words", BAD, ids=[case for case, _args, _words in BAD])
def test_bad_input_is_refused_in_one_line_and_creates_nothing(
        ansible, docker_client, parent, prefix, bad_paths, request, case, args, words):
    values = {"base": str(bad_paths), "prefix": prefix}
    if case == "stopped-parent":
        values["stopped"] = request.getfixturevalue("stopped_parent")
    task = {"name": f"{prefix}-w-bad-{case}", "parent": parent.name}
    task.update({k: v.format(**values) if isinstance(v, str) and k != "name" else v for k, v in args.items()})
    before = snapshot(docker_client)
    one_line_refusal(ansible.task(MODULE, task), *words)
    assert created_since(docker_client, before, prefix, parent.name) == ([], [])
    if re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+", task["name"]):
        assert inspect_or_none(docker_client, task["name"]) is None


@pytest.mark.parametrize("image", ["debian:bookworm-slim", "hal9000/worker:latest"])
def test_a_name_used_by_a_non_worker_container_is_refused(ansible, docker_client, parent, prefix, image):
    """Also a container merely started from the worker image (it inherits the image's role label)."""
    name = f"{prefix}-not-a-worker-{image.split('/')[0].split(':')[0]}"
    other = docker_client.api.create_container(image, name=name, command=["sleep", "600"])["Id"]
    try:
        for state in ("started", "absent"):
            before = snapshot(docker_client)
            one_line_refusal(ansible.task(MODULE, {"name": name, "parent": parent.name, "state": state}),
                             "is not a HAL-9000 worker")
            assert docker_client.api.inspect_container(name)["Id"] == other
            assert created_since(docker_client, before, prefix, parent.name) == ([], [])
    finally:
        remove_containers(docker_client, other)
