"""The seed's in-parent scripts by their documented paths (`docker exec hal9000-parent /scripts/spawn-worker.sh ...`),
and its coordinator.sh commands through playbooks/workers.yml.

/scripts/spawn-worker.sh, /scripts/coordinator.sh and /scripts/setup-dashboard.sh run the parent's coordinator and
dashboard. spawn-worker.sh without -d is the seed's interactive worker: driven here for real in tmux, with Claude
Code talking to the scripted stand-in API, and the worker removed when the session ends (--rm, the default).
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from claude_e2e import interactive_session_removes_its_worker, project_owned_by
from helpers import REPO_ROOT, inspect_or_none, started_parent, succeeded, wait_for

WORKER_UID = 1001


@pytest.fixture(scope="module")
def parent(docker_client, prefix, tmp_path_factory):
    with started_parent(docker_client, tmp_path_factory, f"{prefix}-seed") as started:
        yield started


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return project_owned_by(tmp_path_factory.mktemp("seed-project") / "app", WORKER_UID)


def in_parent(parent, *argv, env=None):
    options = [item for key, value in (env or {}).items() for item in ("-e", f"{key}={value}")]
    return subprocess.run(["docker", "exec", *options, parent.name, *argv], capture_output=True, text=True, timeout=120,
                          check=False)


def ok(parent, *argv, env=None):
    proc = in_parent(parent, *argv, env=env)
    assert proc.returncode == 0, (argv, proc.stdout, proc.stderr)
    return proc.stdout


def test_spawn_worker_sh_detached_with_the_seed_flags_then_coordinator_sh(docker_client, parent, project):
    name = f"{parent.name}-w1"
    out = ok(parent, "/scripts/spawn-worker.sh", "-d", "-n", name, "--memory", "3g", "--cpus", "1", "--pids-limit", "150", project)
    assert f"Worker spawned in background: {name}" in out and "No terminal" not in out, out
    worker = docker_client.api.inspect_container(name)
    assert worker["State"]["Running"] and worker["HostConfig"]["AutoRemove"] is True  # --rm is the seed's default
    limits = worker["HostConfig"]
    assert (limits["Memory"], limits["CpuQuota"] / limits["CpuPeriod"], limits["PidsLimit"]) == (3 << 30, 1, 150)
    assert worker["HostConfig"]["NetworkMode"] == f"container:{parent.id}"
    assert [m["Source"] for m in worker["Mounts"] if m["Destination"] == "/workspace"] == [project]

    assert name in ok(parent, "/scripts/coordinator.sh", "list")
    assert ok(parent, "/scripts/coordinator.sh", "count").strip() == "1"
    assert ok(parent, "/scripts/coordinator.sh", "stop", name).strip() == f"Stopped {name}"
    wait_for(lambda: inspect_or_none(docker_client, name) is None, 30, "the stopped worker to be removed (--rm)")

    # The seed's WORKER_MEMORY=8g WORKER_CPUS=4 spawn-worker.sh: the environment gives the limits no flag gave.
    from_env = f"{parent.name}-w1env"
    ok(parent, "/scripts/spawn-worker.sh", "-d", "-n", from_env, "--pids-limit", "120", project,
       env={"WORKER_MEMORY": "2g", "WORKER_CPUS": "1.5", "WORKER_PIDS_LIMIT": "90"})
    limits = docker_client.api.inspect_container(from_env)["HostConfig"]
    assert (limits["Memory"], limits["CpuQuota"] / limits["CpuPeriod"], limits["PidsLimit"]) == (2 << 30, 1.5, 120)
    docker_client.api.remove_container(from_env, force=True, v=True)

    kept = f"{parent.name}-w2"
    ok(parent, "/scripts/spawn-worker.sh", "-d", "--no-rm", "-n", kept, project)
    ok(parent, "/scripts/coordinator.sh", "stop-all")
    assert docker_client.api.inspect_container(kept)["State"]["Status"] == "exited"  # --no-rm: kept after it stops
    docker_client.api.remove_container(kept, v=True)


def test_spawn_worker_sh_without_a_terminal_runs_the_worker_in_the_background(docker_client, parent, project):
    """The seed's own example (docker exec without -it) has no terminal for Claude Code: the worker is not lost."""
    name = f"{parent.name}-w3"
    out = ok(parent, "/scripts/spawn-worker.sh", "-n", name, project)
    assert f"Worker spawned in background: {name}" in out and "No terminal" in out, out
    assert docker_client.api.inspect_container(name)["State"]["Running"]
    docker_client.api.remove_container(name, force=True, v=True)


def test_spawn_worker_sh_on_a_terminal_is_a_claude_code_session_and_the_worker_goes_with_it(docker_client, parent, project,
                                                                                            tmp_path):
    name = f"{parent.name}-tui"
    interactive_session_removes_its_worker(
        docker_client, parent.name, parent.home, name, tmp_path, lambda url, key_path: (
            f"docker exec -it {parent.name} /scripts/spawn-worker.sh -n {name} --anthropic-base-url {url} "
            f"--api-key-file {key_path} {project}"),
        uid=WORKER_UID)


def test_setup_dashboard_sh_makes_the_dashboard(parent):
    ok(parent, "tmux", "-L", "hal9000", "kill-server")
    assert in_parent(parent, "tmux", "-L", "hal9000", "has-session", "-t", "hal9000").returncode != 0
    ok(parent, "/scripts/setup-dashboard.sh")
    assert in_parent(parent, "tmux", "-L", "hal9000", "has-session", "-t", "hal9000").returncode == 0
    ok(parent, "/scripts/setup-dashboard.sh")  # idempotent: the session is left as it is


def test_workers_yml_lists_counts_shows_logs_and_stops_the_parents_workers(docker_client, parent, project):
    """The seed's coordinator.sh commands through Ansible: playbooks/workers.yml, as the README gives it."""
    names = [f"{parent.name}-pb{index}" for index in (1, 2)]
    for name in names:
        started = succeeded(parent.runner.task("hal9000.dind.worker", {
            "name": name, "parent": parent.name, "project_dir": project, "auto_remove": False,
            "command": ["sh", "-c", f"echo LOG-MARK-{name}; exec sleep 600"]}))
        assert started["worker"]["state"] == "running", started
    stranger = f"{parent.name}-stranger"

    def workers_yml(action, **extra):
        variables = {"workers_action": action, "hal9000_parent_name": parent.name,
                     "hal9000_volume_prefix": parent.args["volume_prefix"], **extra}
        return parent.runner.playbook(REPO_ROOT / "playbooks" / "workers.yml", "-e", json.dumps(variables)).stdout

    try:
        listed = workers_yml("list")
        assert all(f"{name}  Up " in listed for name in names), listed
        counted = workers_yml("count")
        assert re.search(r'"msg": "?2"?\n', counted), counted
        status = workers_yml("status")
        assert "Active workers: 2" in status, status
        logs = workers_yml("logs", worker_name=names[0])
        assert f"LOG-MARK-{names[0]}" in logs and f"LOG-MARK-{names[1]}" not in logs, logs
        negative = parent.runner.playbook(REPO_ROOT / "playbooks" / "workers.yml", "-e", json.dumps(
            {"workers_action": "logs", "worker_name": names[0], "hal9000_parent_name": parent.name, "workers_log_lines": -1}),
            check=False)
        assert negative.returncode != 0 and "log_lines is -1: give 0 (all of the output) or more." in negative.stdout
        # Not the parent's: a worker-labelled container that no parent made (listed as a parent-less worker).
        docker_client.api.start(docker_client.api.create_container("hal9000/worker:latest", ["sleep", "600"], name=stranger,
                                                                   labels={"io.hal9000.role": "worker"}))
        refused = parent.runner.playbook(REPO_ROOT / "playbooks" / "workers.yml", "-e", json.dumps(
            {"workers_action": "logs", "worker_name": stranger, "hal9000_parent_name": parent.name}), check=False)
        assert refused.returncode != 0 and f"{stranger} is not a worker of {parent.name}" in refused.stdout, refused.stdout

        workers_yml("stop", worker_name=names[0])
        assert docker_client.api.inspect_container(names[0])["State"]["Status"] == "exited"
        stopped = workers_yml("stop-all")
        assert "failed=0" in stopped, stopped
        assert docker_client.api.inspect_container(names[1])["State"]["Status"] == "exited"
        assert docker_client.api.inspect_container(stranger)["State"]["Running"], "stop-all stopped a stranger"
    finally:
        for name in [*names, stranger]:
            if inspect_or_none(docker_client, name):
                docker_client.api.remove_container(name, force=True, v=True)
