"""Security of the ways a worker is made, for real: one test parent, the coordinator in it, the modules on the host.

- `coordinator spawn` and pools.json looked at on the host (a host link to / used to be accepted in the parent);
- the worker and pool modules refuse the parent's home as a project;
- a process stuck holding the claim lock no longer freezes `coordinator claim`: it times out (CLAIM_TIMEOUT) and spawns cold.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from helpers import OWNER, one_line_refusal, owned_project, started_parent


@pytest.fixture(scope="module")
def parent(docker_client, prefix, tmp_path_factory):
    with started_parent(docker_client, tmp_path_factory, f"{prefix}-sec") as started:
        yield started


def coordinator(parent, *args, timeout=60):
    return subprocess.run(["docker", "exec", parent.name, "coordinator", *args],
                          capture_output=True, text=True, timeout=timeout, check=False)


def refused(proc, *words):
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    message = proc.stderr.strip()
    assert message.startswith("coordinator: ") and "\n" not in message and "Traceback" not in message, message
    for word in words:
        assert word in message, message
    return message


def names(client, parent, fragment):
    return sorted(c["Names"][0][1:] for c in client.api.containers(all=True, filters={"name": f"{parent.name}-{fragment}"}))


def write_pools(parent, pools):
    path = parent.home / "config" / "pools.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({"enabled": False, "pools": pools}))


def test_coordinator_spawn_looks_at_the_host(docker_client, parent, tmp_path):
    links = {"to-root": "/", "to-home": str(parent.home / "config")}
    for name, target in links.items():
        (tmp_path / name).symlink_to(target)
    project = owned_project(tmp_path / "app")

    refused(coordinator(parent, "spawn", "-n", f"{parent.name}-w-root", "--project", str(tmp_path / "to-root")),
            "resolves to / on the Docker host")
    refused(coordinator(parent, "spawn", "-n", f"{parent.name}-w-home", "--project", str(tmp_path / "to-home")),
            "HAL-9000 home")
    refused(coordinator(parent, "spawn", "-n", f"{parent.name}-w-uid0", "--user", "00:0"), "root")
    assert names(docker_client, parent, "w-") == [], "nothing made from a refused spawn"

    ok = coordinator(parent, "spawn", "-n", f"{parent.name}-w-ok", "--project", project)
    assert ok.returncode == 0, (ok.stdout, ok.stderr)
    made = docker_client.api.inspect_container(f"{parent.name}-w-ok")
    assert [m["Source"] for m in made["Mounts"] if m["Destination"] == "/workspace"] == [project]
    assert made["Config"]["User"] == f"{OWNER}:{OWNER}", "the project's owner on the host, as the worker module decides"
    assert names(docker_client, parent, "path-check") == [], "the helper that looked is gone"


def test_pools_json_is_looked_at_before_a_warm_worker_or_a_cold_claim_is_made(docker_client, parent, tmp_path):
    (tmp_path / "to-root").symlink_to("/")
    write_pools(parent, [{"name": "evil", "project": str(tmp_path / "to-root"), "min": 1, "max": 1}])
    refused(coordinator(parent, "pool", "warm", "--pool", "evil"), "resolves to / on the Docker host")
    refused(coordinator(parent, "claim", f"{parent.name}-c-evil", "--pool", "evil"), "resolves to / on the Docker host")
    warm = docker_client.api.containers(all=True, filters={"label": ["io.hal9000.pool=evil", f"io.hal9000.parent={parent.name}"]})
    assert warm == [] and names(docker_client, parent, "c-evil") == []


def test_the_modules_refuse_the_parents_home_as_a_project(docker_client, parent):
    inside = parent.home / "config"
    worker, pool = parent.runner.tasks([
        ("hal9000.dind.worker", {"name": f"{parent.name}-m-home", "parent": parent.name, "project_dir": str(inside)}),
        ("hal9000.dind.pool", {"parent": parent.name, "hal9000_home": str(parent.home), "enabled": False, "wait": False,
                               "pools": [{"name": "homes", "project_dir": str(parent.home)}]}),
    ])
    one_line_refusal(worker, "HAL-9000 home")
    one_line_refusal(pool, "HAL-9000 home")
    assert names(docker_client, parent, "m-home") == []
    pools = parent.home / "config" / "pools.json"
    assert not pools.exists() or "homes" not in pools.read_text(), "the pool was not written"


HOLD = "import fcntl, os, sys, time\nfd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)\n" \
       "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(600)\n"


def test_a_stuck_claim_lock_times_out_and_the_claim_spawns_cold(docker_client, parent):
    write_pools(parent, [{"name": "generic", "min": 1, "max": 1}])
    config = parent.home / "config" / "hal9000.conf"
    config.write_text((config.read_text() if config.exists() else "") + "\nCLAIM_TIMEOUT=1\n")
    warmed = coordinator(parent, "pool", "warm", "--pool", "generic")
    assert warmed.returncode == 0, (warmed.stdout, warmed.stderr)
    warm_name = warmed.stdout.split()[2]

    # The lock file is in the home the parent mounts: one inode, so this host process holds the parent's lock.
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(parent.home / "run" / "claim.lock")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        began = time.monotonic()
        try:
            stuck = coordinator(parent, "claim", f"{parent.name}-c-cold", "--pool", "generic", "--json", timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail("coordinator claim waited for ever on a claim lock held by a stuck process")
        took = time.monotonic() - began
    finally:
        holder.kill()
        holder.wait()
    assert stuck.returncode == 0, (stuck.stdout, stuck.stderr)
    assert json.loads(stuck.stdout)["claimed"] is False and took < 20, (stuck.stdout, took)
    warning = stuck.stderr.strip()
    assert "\n" not in warning and "CLAIM_TIMEOUT" in warning and "cold spawn" in warning, warning
    assert docker_client.api.inspect_container(f"{parent.name}-c-cold")["State"]["Running"], "the cold spawn runs"
    assert docker_client.api.inspect_container(warm_name)["Name"] == f"/{warm_name}", "the warm worker was not taken"

    claimed = coordinator(parent, "claim", f"{parent.name}-c-warm", "--pool", "generic", "--json")
    assert claimed.returncode == 0 and json.loads(claimed.stdout)["claimed"] is True, (claimed.stdout, claimed.stderr)
